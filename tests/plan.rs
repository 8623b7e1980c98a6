//! `iothub-dynreg plan`, run as a user runs it: golden outputs, exit codes, standard input, no
//! write to the cloud and no secret in any output; its "invalid" is the real API server's
//! refusal word for word; and the controller then does what the plan said.

mod support;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use iothub_dynreg::emulator::{EmulatorConfig, RunningEmulator, Seed};
use serde_json::Value;
use support::control_plane::ControlPlane;
use support::e2e::{Harness, SECRET_ID, SECRET_KEY, emulator_get};

const MANIFESTS: &str = "tests/plan/manifests";
const EXAMPLE_SEED: &str = include_str!("../src/emulator/example-seed.yaml");
/// The example seed's ProductSecret and SecretKey: in no output, ever.
const SECRETS: [&str; 2] = [
    "emulatorProductSecret000",
    "emulator-example-secret-key-0001",
];

fn plan(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_iothub-dynreg"))
        .arg("plan")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("TENCENTCLOUD_SECRET_ID")
        .env_remove("TENCENTCLOUD_SECRET_KEY")
        .env_remove("IOTHUB_DYNREG_ENDPOINT")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// Request IDs are new on every run.
fn masked(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("RequestId ") {
        let (head, tail) = rest.split_at(at + "RequestId ".len());
        out.push_str(head);
        out.push_str("<id>");
        rest = tail.trim_start_matches(|c: char| c.is_ascii_hexdigit() || c == '-');
    }
    out.push_str(rest);
    out
}

/// Compares with `tests/plan/golden.<extension>`; `UPDATE_GOLDEN=1` rewrites it instead.
fn assert_golden(extension: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/plan/golden.{extension}"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        actual,
        expected,
        "{} differs (UPDATE_GOLDEN=1 rewrites it)",
        path.display()
    );
}

#[test]
fn golden_outputs_for_table_json_and_markdown() {
    for (format, extension) in [("table", "txt"), ("json", "json"), ("markdown", "md")] {
        let output = plan(&["-f", MANIFESTS, "--emulator", "-o", format], None);
        let text = stdout(&output);
        assert_eq!(
            output.status.code(),
            Some(1),
            "errors in the input: {text}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        for secret in SECRETS {
            assert!(!text.contains(secret), "{format} output holds a secret");
        }
        assert_golden(extension, &masked(&text));
    }
    let json: Value = serde_json::from_str(&stdout(&plan(
        &["-f", MANIFESTS, "--emulator", "-o", "json"],
        None,
    )))
    .unwrap();
    assert_eq!(json["formatVersion"], 1);
    assert_eq!(json["exitCode"], 1);
}

#[test]
fn exit_codes_say_nothing_to_do_changes_pending_or_errors() {
    // The README's first command: changes pending, and exactly the table the README shows.
    let output = plan(&["-f", "examples/", "--emulator"], None);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(2), "{text}");
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let shown = readme
        .split_once("```\nRESOURCE")
        .and_then(|(_, rest)| rest.split_once("```"))
        .map(|(table, _)| format!("RESOURCE{table}"))
        .expect("README.md shows plan's table");
    assert_eq!(text, shown, "README.md's table is not what plan prints");
    let output = plan(&["-f", "examples/4-observe-only.yaml", "--emulator"], None);
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    let output = plan(
        &["-f", "tests/plan/manifests/4-invalid.yml", "--emulator"],
        None,
    );
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
}

#[test]
fn what_plan_decides_without_the_cloud_comes_before_the_cloud() {
    // A template that does not compile, for a product no account has: invalid, not "not found".
    let output = plan(
        &[
            "-f",
            "tests/plan/manifests/4-invalid.yml",
            "--emulator",
            "-o",
            "json",
        ],
        None,
    );
    let json: Value = serde_json::from_str(&stdout(&output)).unwrap();
    let row = json["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["name"] == "bad-template-unknown-product")
        .unwrap();
    assert_eq!(row["action"], "invalid", "{row}");
    let detail = row["detail"].as_str().unwrap();
    assert!(
        detail.contains("secretTemplate.data[config.json]: syntax error"),
        "{detail}"
    );
}

#[test]
fn reads_standard_input_as_kubectl_kustomize_pipes_it() {
    let manifests = std::fs::read_to_string("examples/3-dynamicregistration.yaml").unwrap();
    let piped =
        format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: fleet}}\n---\n{manifests}");
    let output = plan(&["-f", "-", "--emulator", "-o", "json"], Some(&piped));
    assert_eq!(output.status.code(), Some(2));
    let json: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(json["resources"][0]["file"], "-");
    assert_eq!(json["resources"][0]["document"], 2);
    assert_eq!(json["summary"]["skippedDocuments"], 1);
}

#[test]
fn unreadable_input_is_an_error_naming_file_and_document() {
    let output = plan(
        &["-f", "-", "--emulator"],
        Some("apiVersion: v1\nkind: Namespace\n---\nspec: [unclosed\n"),
    );
    assert_eq!(output.status.code(), Some(1));
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(
        error.starts_with("iothub-dynreg plan: -, document 2: not valid YAML or JSON"),
        "{error}"
    );
    let output = plan(&["-f", "no/such/dir"], None);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("cannot read no/such/dir"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let output = plan(&["-f", "examples/"], None);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no credentials"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_reads_with_the_credentials_file_and_never_writes() {
    let emulator =
        RunningEmulator::start(EmulatorConfig::new(Seed::from_yaml(EXAMPLE_SEED).unwrap()))
            .await
            .unwrap();
    let endpoint = emulator.endpoint();
    let output = tokio::task::spawn_blocking(move || {
        plan(
            &[
                "-f",
                MANIFESTS,
                "--endpoint",
                &endpoint,
                "--insecure-loopback-endpoint",
                "--credentials-file",
                "examples/2-credentials-secret.yaml",
                "-o",
                "json",
            ],
            None,
        )
    })
    .await
    .unwrap();
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    let json: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["summary"]["actions"]["update"], 1, "{text}");
    let stats = emulator_get(&emulator, "stats").await;
    let calls = &stats["calls"];
    assert_eq!(calls.get("UpdateProductDynamicRegister"), None, "{stats}");
    // One list per region (ap-guangzhou, ap-shanghai, ap-beijing), and a single read of the
    // product missing from its region's list.
    assert_eq!(calls["DescribeProducts"]["Success"], 3, "{stats}");
    assert_eq!(
        calls["DescribeProduct"]["ResourceNotFound.ProductNotExist"], 2,
        "{stats}"
    );
}

/// Each document of a file, alone.
fn documents(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap();
    let mut found = Vec::new();
    for document in serde_yaml::Deserializer::from_str(&text) {
        let value: Value = serde::Deserialize::deserialize(document).unwrap();
        if value["kind"] == "List" {
            found.extend(value["items"].as_array().unwrap().iter().cloned());
        } else if !value.is_null() {
            found.push(value);
        }
    }
    found
}

/// `kubectl create --dry-run=server`, as a pipeline validates: its error text, or `None`.
fn server_refusal(plane: &ControlPlane, object: &Value) -> Option<String> {
    let mut child = Command::new("kubectl")
        .args(["create", "--dry-run=server", "-f", "-"])
        .env("KUBECONFIG", plane.admin_kubeconfig())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    let mut input = child.stdin.take().unwrap();
    input.write_all(object.to_string().as_bytes()).unwrap();
    drop(input);
    let output = child.wait_with_output().unwrap();
    (!output.status.success()).then(|| String::from_utf8_lossy(&output.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_plan_calls_invalid_the_api_server_refuses_in_the_same_words() {
    let Some(plane) = ControlPlane::shared() else {
        return;
    };
    let client = plane.admin_client().await;
    plane.create_namespace(&client, "fleet").await;
    plane.create_namespace(&client, "other-team").await;
    let validator = iothub_dynreg::preview::validate::Validator::new();
    let mut refused = 0;
    for file in std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(MANIFESTS)).unwrap() {
        let path = format!(
            "{MANIFESTS}/{}",
            file.unwrap().file_name().to_string_lossy()
        );
        for object in documents(&path) {
            if object["kind"] != "DynamicRegistration" {
                continue;
            }
            let name = object["metadata"]["name"].clone();
            let server = server_refusal(plane, &object);
            match validator.validate(&object) {
                Ok(_) => assert_eq!(server, None, "{name}: plan accepts, the server refuses"),
                Err(violations) => {
                    refused += 1;
                    let server = server
                        .unwrap_or_else(|| panic!("{name}: plan refuses, the server accepts"));
                    println!("{name}: server: {server}");
                    for violation in &violations {
                        assert!(
                            server.contains(&violation.to_string()),
                            "{name}: plan says {violation}; the server: {server}"
                        );
                    }
                }
            }
        }
    }
    assert_eq!(refused, 4, "the fixtures hold four invalid manifests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_does_what_the_plan_said() {
    let products = EXAMPLE_SEED
        .split_once("\nproducts:")
        .map(|(_, products)| format!("products:{products}"))
        .unwrap();
    let Some(harness) = Harness::with_credentials(&products, |_| {}).await else {
        return;
    };
    // The fixtures that need no ordering among claims, in the harness's namespace.
    let mut manifests = String::new();
    for path in [
        "tests/plan/manifests/1-fleet.yaml",
        "tests/plan/manifests/2-other-team.yaml",
        "tests/plan/manifests/3-errors.json",
    ] {
        for mut object in documents(path) {
            let name = object["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if object["kind"] != "DynamicRegistration"
                || name.contains("copy")
                || name == "sensors" && object["metadata"]["namespace"] == "other-team"
            {
                continue;
            }
            object["metadata"]["namespace"] = Value::from(harness.namespace.clone());
            object["spec"]["credentialsSecretRef"] =
                serde_json::json!({"name": "tencent-credentials"});
            manifests.push_str(&format!("---\n{}\n", object));
        }
    }
    let file = harness.dir.join("plan-manifests.yaml");
    std::fs::write(&file, &manifests).unwrap();
    let credentials = harness.dir.join("credentials.yaml");
    std::fs::write(
        &credentials,
        format!("secretId: {SECRET_ID}\nsecretKey: {SECRET_KEY}\n"),
    )
    .unwrap();
    let endpoint = harness.emulator.endpoint();
    let args = [
        "-f".to_owned(),
        file.display().to_string(),
        "--endpoint".to_owned(),
        endpoint,
        "--insecure-loopback-endpoint".to_owned(),
        "--credentials-file".to_owned(),
        credentials.display().to_string(),
        "-o".to_owned(),
        "json".to_owned(),
    ];
    let output = tokio::task::spawn_blocking(move || {
        plan(&args.iter().map(String::as_str).collect::<Vec<_>>(), None)
    })
    .await
    .unwrap();
    let planned: Value = serde_json::from_str(&stdout(&output)).unwrap();
    let updates = planned["summary"]["actions"]["update"].as_u64().unwrap();
    assert!(updates > 0, "{planned}");

    harness.kubectl(&["apply", "-f", &file.display().to_string()]);
    let controller = harness.spawn_controller(&[]);
    // The controller's verdict for each plan action.
    for resource in planned["resources"].as_array().unwrap() {
        let name = resource["name"].as_str().unwrap();
        let reason = match resource["action"].as_str().unwrap() {
            "update" => "InSync",
            "no change" if resource["changes"] == serde_json::json!([]) => {
                if name.starts_with("gateways") {
                    "Observed"
                } else {
                    "InSync"
                }
            }
            "drift" => "Observed",
            "suspended" => "Suspended",
            "not found" => "ProductNotFound",
            other => panic!("{name}: no e2e expectation for {other}"),
        };
        harness
            .wait_reason(name, reason, Duration::from_secs(30), &controller)
            .await;
        for change in resource["changes"].as_array().unwrap() {
            let cloud = harness
                .cloud_product(resource["productId"].as_str().unwrap())
                .await;
            let now = &cloud[change["field"].as_str().unwrap()];
            let expected = if resource["action"] == "update" {
                &change["wanted"]
            } else {
                &change["cloud"]
            };
            assert_eq!(
                now.as_i64().unwrap(),
                cloud_number(expected.as_str().unwrap()),
                "{name}: {cloud}"
            );
        }
    }
    assert_eq!(
        harness
            .cloud_calls("UpdateProductDynamicRegister", "Success")
            .await,
        updates,
        "one update per planned update, none elsewhere"
    );
}

/// A plan value as the emulator's control endpoint holds it.
fn cloud_number(value: &str) -> i64 {
    match value {
        "Disabled" => 0,
        "PreCreate" => 1,
        "AutoCreate" => 2,
        limit => limit.parse().unwrap(),
    }
}
