"""Calls iothub-dynreg-emulator with the official Tencent Cloud Python SDK.

Usage: official_sdk_check.py EMULATOR_URL
The emulator must serve examples/emulator-seed.yaml. Exits non-zero at the first mismatch and
prints one line per check, so the Rust test that runs this can show what happened.
"""

import json
import sys
import urllib.request
from urllib.parse import urlparse

from tencentcloud.common import credential
from tencentcloud.common.common_client import CommonClient
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.iotcloud.v20210408 import iotcloud_client, models
from tencentcloud.iotexplorer.v20190423 import iotexplorer_client
from tencentcloud.iotexplorer.v20190423 import models as explorer_models
from tencentcloud.iotvideo.v20211125 import iotvideo_client
from tencentcloud.iotvideo.v20211125 import models as video_models

SECRET_ID = "AKIDEMULATOREXAMPLE0001"
SECRET_KEY = "emulator-example-secret-key-0001"
TEMP_ID = "AKIDEMULATORTEMPORARY01"
TEMP_KEY = "emulator-example-secret-key-0002"
TEMP_TOKEN = "emulator-example-session-token"
ROLE_ARN = "qcs::cam::uin/100000000001:roleName/iothub-dynreg"
ROLE_PROVIDER = "tke-oidc-example"
ROLE_TOKEN = "emulator-example-web-identity-token"


def client(url, cred, method="POST", region="ap-guangzhou"):
    parsed = urlparse(url)
    http = HttpProfile(protocol=parsed.scheme, endpoint=parsed.netloc, reqMethod=method)
    return iotcloud_client.IotcloudClient(cred, region, ClientProfile(httpProfile=http))


def expect_error(code, call):
    try:
        call()
    except TencentCloudSDKException as error:
        if error.get_code() != code:
            raise AssertionError(f"expected {code}, got {error.get_code()}: {error.get_message()}")
        return error
    raise AssertionError(f"expected {code}, the call succeeded")


def control(url, path, body):
    """PUTs JSON to one of the emulator's control endpoints."""
    request = urllib.request.Request(
        f"{url}/_emulator/{path}", data=json.dumps(body).encode(), method="PUT",
        headers={"Content-Type": "application/json"},
    )
    urllib.request.urlopen(request).read()


def describe(c, product_id):
    request = models.DescribeProductRequest()
    request.ProductId = product_id
    return c.DescribeProduct(request)


def main(url):
    good = client(url, credential.Credential(SECRET_ID, SECRET_KEY))

    product = describe(good, "ABCDE12345")
    assert product.ProductId == "ABCDE12345", product
    assert product.ProductProperties.RegisterType == 0, product.ProductProperties.RegisterType
    print("DescribeProduct (POST JSON): ok, RequestId", product.RequestId)

    update = models.UpdateProductDynamicRegisterRequest()
    update.ProductId = "ABCDE12345"
    update.RegisterType = 2
    update.RegisterLimit = 100
    updated = good.UpdateProductDynamicRegister(update)
    assert updated.RegisterType == 2 and updated.RegisterLimit == 100, updated
    assert len(updated.ProductSecret) >= 16, "a ProductSecret is generated when registration is enabled"
    print("UpdateProductDynamicRegister: ok, a ProductSecret was generated")

    page = models.DescribeProductsRequest()
    page.Offset = 0
    page.Limit = 10
    products = good.DescribeProducts(page)
    ids = sorted(p.ProductId for p in products.Products)
    assert products.TotalCount == 4, products.TotalCount
    assert ids == ["ABCDE12345", "FGHIJ67890", "FORBID0001", "LORA000001"], ids
    assert {p.ProductId: p.ProductProperties.RegisterType for p in products.Products}["ABCDE12345"] == 2
    print("DescribeProducts: ok,", products.TotalCount, "products in ap-guangzhou")

    by_get = describe(client(url, credential.Credential(SECRET_ID, SECRET_KEY), method="GET"), "FGHIJ67890")
    assert by_get.ProductProperties.RegisterLimit == 10000, by_get.ProductProperties.RegisterLimit
    print("DescribeProduct (GET query): ok")

    temporary = client(url, credential.Credential(TEMP_ID, TEMP_KEY, TEMP_TOKEN))
    assert describe(temporary, "ABCDE12345").ProductId == "ABCDE12345"
    print("temporary credentials with X-TC-Token: ok")

    # The SDK's OIDC provider (TKE workload identity) exchanges a web identity token with STS's
    # AssumeRoleWithWebIdentity, unsigned; it speaks https only, so its profile is pointed at
    # the emulator's plain http.
    credential.HttpProfile = lambda: HttpProfile(protocol=urlparse(url).scheme)
    oidc = credential.OIDCRoleArnCredential(
        "ap-guangzhou", ROLE_PROVIDER, ROLE_TOKEN, ROLE_ARN, "sdk-check", 600,
        endpoint=urlparse(url).netloc,
    )
    assert describe(client(url, oidc), "ABCDE12345").ProductId == "ABCDE12345"
    assert oidc.secret_id.startswith("AKID") and oidc.token
    print("OIDC role credentials (AssumeRoleWithWebIdentity): ok")

    wrong_key = client(url, credential.Credential(SECRET_ID, "not-the-secret-key"))
    expect_error("AuthFailure.SignatureFailure", lambda: describe(wrong_key, "ABCDE12345"))
    print("wrong SecretKey: AuthFailure.SignatureFailure")

    wrong_token = client(url, credential.Credential(TEMP_ID, TEMP_KEY, "stolen-token"))
    expect_error("AuthFailure.TokenFailure", lambda: describe(wrong_token, "ABCDE12345"))
    print("wrong token: AuthFailure.TokenFailure")

    unknown_id = client(url, credential.Credential("AKIDNOBODY", SECRET_KEY))
    expect_error("AuthFailure.SecretIdNotFound", lambda: describe(unknown_id, "ABCDE12345"))
    print("unknown SecretId: AuthFailure.SecretIdNotFound")

    expect_error("ResourceNotFound.ProductNotExist", lambda: describe(good, "NOSUCHPROD"))
    print("unknown product: ResourceNotFound.ProductNotExist")

    shanghai = client(url, credential.Credential(SECRET_ID, SECRET_KEY), region="ap-shanghai")
    expect_error("ResourceNotFound.ProductNotExist", lambda: describe(shanghai, "ABCDE12345"))
    print("product of another region: ResourceNotFound.ProductNotExist")

    lora = models.UpdateProductDynamicRegisterRequest()
    lora.ProductId = "LORA000001"
    lora.RegisterType = 1
    lora.RegisterLimit = 1
    expect_error("InvalidParameterValue.ProductTypeNotSupport", lambda: good.UpdateProductDynamicRegister(lora))
    print("LoRa product: InvalidParameterValue.ProductTypeNotSupport")

    # STS's GetCallerIdentity, signed for service sts, as the SDK's generic client sends it.
    parsed = urlparse(url)
    profile = ClientProfile(httpProfile=HttpProfile(protocol=parsed.scheme, endpoint=parsed.netloc))
    sts = CommonClient("sts", "2018-08-13", credential.Credential(SECRET_ID, SECRET_KEY), "ap-guangzhou", profile)
    identity = sts.call_json("GetCallerIdentity", {})["Response"]
    assert identity["AccountId"] and identity["UserId"] == SECRET_ID, identity
    print("GetCallerIdentity: ok, account", identity["AccountId"])

    check_explorer_and_video(url)

    control(url, "accounts/default/isolated", {"isolated": True})
    expect_error("FailedOperation.AccountIsolated", lambda: describe(good, "ABCDE12345"))
    control(url, "accounts/default/isolated", {"isolated": False})
    assert describe(good, "ABCDE12345").ProductId == "ABCDE12345"
    print("account in arrears: FailedOperation.AccountIsolated, then restored")
    print("official SDK: all checks passed")


def check_explorer_and_video(url):
    """IoT Explorer's and IoT Video's own clients, each signing for its service and version."""
    parsed = urlparse(url)
    profile = ClientProfile(httpProfile=HttpProfile(protocol=parsed.scheme, endpoint=parsed.netloc))
    cred = credential.Credential(SECRET_ID, SECRET_KEY)
    for name, module, models_of, product, before in [
        ("IoT Explorer", iotexplorer_client.IotexplorerClient, explorer_models, "EXPLR00001", (0, 0)),
        ("IoT Video", iotvideo_client.IotvideoClient, video_models, "VIDEO00001", (1, 20)),
    ]:
        c = module(cred, "ap-guangzhou", profile)
        read = models_of.DescribeProductDynamicRegisterRequest()
        read.ProductId = product
        seen = c.DescribeProductDynamicRegister(read)
        assert (seen.RegisterType, seen.RegisterLimit) == before, seen
        modify = models_of.ModifyProductDynamicRegisterRequest()
        modify.ProductId = product
        modify.RegisterType = 2
        modify.RegisterLimit = 250
        applied = c.ModifyProductDynamicRegister(modify)
        assert (applied.RegisterType, applied.RegisterLimit) == (2, 250), applied
        assert len(applied.ProductSecret) >= 16, "a ProductSecret once registration is on"
        again = c.DescribeProductDynamicRegister(read)
        assert (again.RegisterType, again.RegisterLimit, again.ProductSecret) == (2, 250, applied.ProductSecret)
        print(f"{name} Describe/ModifyProductDynamicRegister: ok, RequestId", applied.RequestId)

    explorer = iotexplorer_client.IotexplorerClient(cred, "ap-guangzhou", profile)
    cert = explorer_models.ModifyProductDynamicRegisterRequest()
    cert.ProductId = "EXPLRCERT1"
    cert.RegisterType = 1
    cert.RegisterLimit = 1
    expect_error("UnauthorizedOperation.ProductNotSupportPSK", lambda: explorer.ModifyProductDynamicRegister(cert))
    print("IoT Explorer certificate product: UnauthorizedOperation.ProductNotSupportPSK")
    hub_product = explorer_models.DescribeProductDynamicRegisterRequest()
    hub_product.ProductId = "ABCDE12345"
    expect_error("ResourceNotFound.StudioProductNotExist", lambda: explorer.DescribeProductDynamicRegister(hub_product))
    print("IoT Hub product asked of IoT Explorer: ResourceNotFound.StudioProductNotExist")


if __name__ == "__main__":
    main(sys.argv[1])
