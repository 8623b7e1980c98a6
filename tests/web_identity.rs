//! Web identity (TKE workload identity): the projected token exchanged with STS for temporary
//! credentials, against the emulator's STS. Refreshed before expiry, the token file re-read at
//! each exchange, a refused token backing off without burning quota, one rate-limit bucket across
//! refreshes, no secret in `Debug` or errors; and end to end, the controller running on web
//! identity through several expiries without a failed reconcile.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use iothub_dynreg::cloud::web_identity::{WebIdentity, WebIdentityCredentials};
use iothub_dynreg::cloud::{ClientConfig, CloudClient, Endpoint, ErrorClass};
use iothub_dynreg::controller::resources::RegistrationMode;
use iothub_dynreg::emulator::{EmulatorConfig, RunningEmulator, Seed};
use support::e2e::{Harness, emulator_get, registration};

const ROLE: &str = "qcs::cam::uin/100000000001:roleName/iothub-dynreg";
const PROVIDER: &str = "tke-oidc-cls-test";
const GOOD_TOKEN: &str = "eyJ.good-token-1.sig";
const ROTATED_TOKEN: &str = "eyJ.good-token-2.sig";

fn roles_yaml() -> String {
    format!(
        "roles:\n  - {{roleArn: '{ROLE}', providerId: {PROVIDER}, tokens: ['{GOOD_TOKEN}', '{ROTATED_TOKEN}']}}\n"
    )
}

fn seed() -> Seed {
    Seed::from_yaml(&format!(
        "accounts: [{{secretId: AKIDunusedKEY0000001, secretKey: unused}}]\nproducts: [{{productId: WEBID00001, region: ap-guangzhou}}]\n{}",
        roles_yaml()
    ))
    .unwrap()
}

async fn emulator(lifetime_seconds: i64) -> RunningEmulator {
    let mut config = EmulatorConfig::new(seed());
    config.temporary_credentials_lifetime_seconds = Some(lifetime_seconds);
    RunningEmulator::start(config).await.unwrap()
}

fn client(emulator: &RunningEmulator) -> CloudClient {
    let endpoint = Endpoint::parse(&emulator.endpoint(), true).unwrap();
    CloudClient::new(ClientConfig {
        endpoint: endpoint.clone(),
        sts_endpoint: endpoint,
        ..ClientConfig::default()
    })
    .unwrap()
}

fn token_file(name: &str, token: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("dynreg-webid-{}-{name}", std::process::id()));
    std::fs::write(&path, token).unwrap();
    path
}

fn identity(token_file: PathBuf) -> WebIdentity {
    WebIdentity {
        role_arn: ROLE.to_owned(),
        provider_id: PROVIDER.to_owned(),
        region: "ap-guangzhou".to_owned(),
        token_file,
        session_name: "test".to_owned(),
        duration_seconds: 7200,
    }
}

async fn sts_calls(emulator: &RunningEmulator, result: &str) -> u64 {
    emulator_get(emulator, "stats").await["calls"]["AssumeRoleWithWebIdentity"][result]
        .as_u64()
        .unwrap_or(0)
}

#[tokio::test]
async fn temporary_credentials_are_refreshed_before_they_expire() {
    let emulator = emulator(4).await;
    let cloud = client(&emulator);
    let file = token_file("refresh", GOOD_TOKEN);
    let provider = WebIdentityCredentials::new(identity(file.clone()), cloud.clone());

    let first = provider.credentials().await.unwrap();
    assert!(first.token.is_some(), "temporary credentials carry a token");
    cloud
        .describe_products(&first, "ap-guangzhou")
        .await
        .expect("the role's credentials read its account");
    // Held while fresh: no second exchange.
    assert_eq!(provider.credentials().await.unwrap(), first);
    assert_eq!(sts_calls(&emulator, "Success").await, 1);

    // Past half their lifetime: exchanged again, before they expire.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let second = provider.credentials().await.unwrap();
    assert_ne!(second.secret_id, first.secret_id);
    assert_eq!(sts_calls(&emulator, "Success").await, 2);
    cloud
        .describe_products(&second, "ap-guangzhou")
        .await
        .unwrap();

    // The first ones expire as the cloud says; the held ones still work.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let expired = cloud
        .describe_products(&first, "ap-guangzhou")
        .await
        .unwrap_err();
    assert_eq!(expired.code(), "AuthFailure.TokenFailure");
    let current = provider.credentials().await.unwrap();
    cloud
        .describe_products(&current, "ap-guangzhou")
        .await
        .unwrap();

    // One rate-limit bucket per action however many keys the role was given.
    assert_eq!(
        cloud.limiter_buckets(),
        2,
        "DescribeProducts and AssumeRoleWithWebIdentity, each once"
    );
    std::fs::remove_file(file).unwrap();
}

#[tokio::test]
async fn the_token_file_is_read_at_every_exchange_and_a_refused_token_rests() {
    let emulator = emulator(2).await;
    let file = token_file("rotate", GOOD_TOKEN);
    let provider = WebIdentityCredentials::new(identity(file.clone()), client(&emulator));
    provider.credentials().await.unwrap();

    // The kubelet writes a token STS does not accept: the next exchange reads it, is refused,
    // and the refusal is remembered: asking 50 times costs one call.
    std::fs::write(&file, "eyJ.revoked.sig").unwrap();
    // Past the window in which the held credentials still serve while a refresh fails.
    tokio::time::sleep(Duration::from_millis(1900)).await;
    for _ in 0..50 {
        let failure = provider.credentials().await.unwrap_err();
        assert_eq!(failure.class, ErrorClass::Auth);
        assert_eq!(failure.code, "InvalidParameter.WebIdentityTokenError");
        assert!(!failure.message.contains("revoked"), "{}", failure.message);
    }
    assert_eq!(
        sts_calls(&emulator, "InvalidParameter.WebIdentityTokenError").await,
        1
    );

    // A rotated token is tried at once.
    std::fs::write(&file, ROTATED_TOKEN).unwrap();
    let rotated = provider.credentials().await.unwrap();
    assert_eq!(sts_calls(&emulator, "Success").await, 2);

    // Nothing secret in Debug output.
    let shown = format!("{provider:?} {rotated:?}");
    for secret in [
        ROTATED_TOKEN,
        rotated.secret_key.expose(),
        rotated.token.as_ref().unwrap().expose(),
    ] {
        assert!(!shown.contains(secret), "{shown}");
    }
    std::fs::remove_file(file).unwrap();
}

#[tokio::test]
async fn a_missing_token_file_says_so() {
    let emulator = emulator(60).await;
    let provider = WebIdentityCredentials::new(
        identity(PathBuf::from("/nonexistent/dynreg/token")),
        client(&emulator),
    );
    let failure = provider.credentials().await.unwrap_err();
    assert_eq!(failure.code, "TokenFileUnreadable");
    assert!(
        failure.message.contains("/nonexistent/dynreg/token"),
        "{}",
        failure.message
    );
    assert_eq!(sts_calls(&emulator, "Success").await, 0);
}

/// STS's answer is input like any other: an `ExpiredTime` at the end of time neither panics
/// nor keeps credentials for ever (they are held at most as long as STS may issue them).
#[tokio::test]
async fn an_expiry_at_the_end_of_time_is_no_panic() {
    let emulator = emulator(i64::MAX).await;
    let file = token_file("end-of-time", GOOD_TOKEN);
    let provider = WebIdentityCredentials::new(identity(file.clone()), client(&emulator));
    let first = provider.credentials().await.unwrap();
    assert_eq!(provider.credentials().await.unwrap(), first);
    assert_eq!(sts_calls(&emulator, "Success").await, 1);
    std::fs::remove_file(file).unwrap();
}

/// A refresh that fails at half-life leaves the credentials held in use until shortly before
/// they expire (reconciles go on), retried with backoff meanwhile; only then is the failure
/// every caller's.
#[tokio::test]
async fn a_failed_refresh_keeps_the_current_credentials_until_shortly_before_expiry() {
    let emulator = emulator(6).await;
    let file = token_file("failed-refresh", GOOD_TOKEN);
    let provider = WebIdentityCredentials::new(identity(file.clone()), client(&emulator));
    let first = provider.credentials().await.unwrap();
    // The token disappears; past half-life, the refresh fails.
    std::fs::remove_file(&file).unwrap();
    tokio::time::sleep(Duration::from_millis(3200)).await;
    for _ in 0..20 {
        assert_eq!(
            provider.credentials().await.unwrap(),
            first,
            "still valid for almost 3 s"
        );
    }
    // Shortly before they expire, they are no longer handed out.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let failure = provider.credentials().await.unwrap_err();
    assert_eq!(failure.code, "TokenFileUnreadable");
    // The token is back: the next try, once the backoff (2 s, then 4 s) is over, works.
    std::fs::write(&file, GOOD_TOKEN).unwrap();
    tokio::time::sleep(Duration::from_millis(4100)).await;
    assert_ne!(provider.credentials().await.unwrap(), first);
    std::fs::remove_file(file).unwrap();
}

/// The token file is read with a bound: a file far larger than any token is refused without
/// being read whole.
#[tokio::test]
async fn a_token_file_larger_than_any_token_is_refused() {
    let emulator = emulator(60).await;
    let file = token_file("huge", &"x".repeat(8 * 1024 * 1024));
    let provider = WebIdentityCredentials::new(identity(file.clone()), client(&emulator));
    let failure = provider.credentials().await.unwrap_err();
    assert_eq!(failure.code, "TokenFileUnreadable");
    assert!(
        failure.message.contains("larger than"),
        "{}",
        failure.message
    );
    assert_eq!(sts_calls(&emulator, "Success").await, 0);
    std::fs::remove_file(file).unwrap();
}

#[test]
fn tke_environment_is_read_as_tke_injects_it() {
    let env = |pairs: &'static [(&'static str, &'static str)]| {
        move |name: &str| {
            pairs
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        }
    };
    assert_eq!(WebIdentity::from_tke_environment(env(&[])), Ok(None));
    let identity = WebIdentity::from_tke_environment(env(&[
        ("TKE_ROLE_ARN", ROLE),
        ("TKE_PROVIDER_ID", PROVIDER),
        ("TKE_REGION", "ap-guangzhou"),
    ]))
    .unwrap()
    .unwrap();
    assert_eq!(
        identity.token_file,
        PathBuf::from("/var/run/secrets/tke.cloud.tencent.com/identity/token")
    );
    let error = WebIdentity::from_tke_environment(env(&[("TKE_ROLE_ARN", ROLE)])).unwrap_err();
    assert!(error.contains("TKE_PROVIDER_ID"), "{error}");
}

/// The controller with TKE's variables and no keys: its credentials expire every 6 s, and over
/// several expiries every reconcile succeeds, the token file rotating meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_runs_on_web_identity_through_expiries() {
    let products = format!(
        "products: [{{productId: WEBID00001, region: ap-guangzhou}}, {{productId: WEBID00002, region: ap-guangzhou}}]\n{}",
        roles_yaml()
    );
    let Some(harness) = Harness::start(&products, |config| {
        config.temporary_credentials_lifetime_seconds = Some(6);
    })
    .await
    else {
        return;
    };
    let file = harness.dir.join("token");
    std::fs::write(&file, GOOD_TOKEN).unwrap();
    let endpoint = harness.emulator.endpoint();
    let token_path = file.display().to_string();
    let controller = harness.spawn_controller_with_env(
        &[
            "--sts-endpoint",
            &endpoint,
            "--default-credentials-namespaces",
            &harness.namespace,
            "--resync-interval",
            "2s",
            "--observe-interval",
            "1s",
        ],
        &[
            ("TKE_ROLE_ARN", ROLE),
            ("TKE_PROVIDER_ID", PROVIDER),
            ("TKE_REGION", "ap-guangzhou"),
            ("TKE_WEB_IDENTITY_TOKEN_FILE", &token_path),
        ],
    );
    for (name, product) in [("first", "WEBID00001"), ("second", "WEBID00002")] {
        let mut resource = registration(name, product, RegistrationMode::AutoCreate, 100);
        resource.spec.credentials_secret_ref = None;
        harness.create(resource).await;
    }
    for name in ["first", "second"] {
        harness
            .wait_reason(name, "InSync", Duration::from_secs(20), &controller)
            .await;
    }
    // Three lifetimes of resyncs, the token rotating half way.
    tokio::time::sleep(Duration::from_secs(9)).await;
    std::fs::write(&file, ROTATED_TOKEN).unwrap();
    tokio::time::sleep(Duration::from_secs(9)).await;

    let exchanges = harness
        .cloud_calls("AssumeRoleWithWebIdentity", "Success")
        .await;
    assert!(
        exchanges >= 4,
        "exchanged {exchanges} times in 18 s at 6 s lifetimes"
    );
    let stats = harness.emulator_get("stats").await;
    let reads = stats["calls"]["DescribeProducts"]["Success"]
        .as_u64()
        .unwrap_or(0)
        + stats["calls"]["DescribeProduct"]["Success"]
            .as_u64()
            .unwrap_or(0);
    println!("18 s on 6 s credentials: {exchanges} exchanges, {reads} reads");
    assert!(reads >= 8, "resyncs kept reading: {stats}");
    assert_eq!(
        harness
            .cloud_calls("DescribeProducts", "AuthFailure.TokenFailure")
            .await
            + harness
                .cloud_calls("DescribeProduct", "AuthFailure.TokenFailure")
                .await,
        0,
        "no call with expired credentials: {stats}"
    );
    for name in ["first", "second"] {
        assert_eq!(
            harness.ready_reason(name).await,
            Some(("True".to_owned(), "InSync".to_owned()))
        );
    }
    let log = controller.stderr();
    assert!(!log.contains("failed"), "a reconcile failed:\n{log}");
    for secret in [GOOD_TOKEN, ROTATED_TOKEN, "tmpkey", "session"] {
        assert!(!log.contains(secret), "the log holds {secret}");
    }
}
