//! Reference pages of the documentation site generated from the code, never written by hand:
//! every field of the CRDs (from their schemas), every flag of every subcommand (from clap) and
//! every metric (from the registry). Like the
//! rendered manifests they are checked: this test fails when a page differs from what the code
//! gives; `UPDATE_REFERENCE=1 cargo test --test reference` rewrites them.

use std::fmt::Write;
use std::path::Path;

use clap::CommandFactory;
use iothub_dynreg::cli::Cli;
use iothub_dynreg::controller::resources::definitions;
use iothub_dynreg::ops::metrics::Metrics;
use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn check_or_update(page: &str, generated: &str) {
    let path = Path::new(ROOT).join("docs/reference").join(page);
    if std::env::var_os("UPDATE_REFERENCE").is_some() {
        std::fs::write(&path, generated).unwrap();
    }
    let written = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        written == generated,
        "docs/reference/{page} differs from the code: UPDATE_REFERENCE=1 cargo test --test reference rewrites it"
    );
}

/// Text fit for one cell of a Markdown table.
fn cell(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

fn type_of(schema: &Value) -> String {
    if schema["x-kubernetes-int-or-string"] == true {
        return "int or string".into();
    }
    let base = schema["type"].as_str().unwrap_or("object");
    match base {
        "array" => format!("array of {}", type_of(&schema["items"])),
        "object" if schema["additionalProperties"].is_object() => {
            format!("map of {}", type_of(&schema["additionalProperties"]))
        }
        _ if schema["enum"].is_array() => {
            let values: Vec<String> = schema["enum"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| format!("`{}`", v.as_str().map_or(v.to_string(), str::to_owned)))
                .collect();
            format!("{base}: {}", values.join(", "))
        }
        _ => base.into(),
    }
}

/// One row per field under `schema`, depth first, in the schema's order.
fn fields(schema: &Value, path: &str, rows: &mut String) {
    let Some(properties) = schema["properties"].as_object() else {
        return;
    };
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|names| names.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for (name, field) in properties {
        let field_path = format!("{path}.{name}");
        let default = match &field["default"] {
            Value::Null => String::new(),
            value => format!("`{value}`"),
        };
        let required = if required.contains(&name.as_str()) {
            "yes"
        } else {
            ""
        };
        let description = cell(field["description"].as_str().unwrap_or(""));
        let _ = writeln!(
            rows,
            "| `{field_path}` | {} | {default} | {required} | {description} |",
            cell(&type_of(field))
        );
        fields(field, &field_path, rows);
        if field["type"] == "array" {
            fields(&field["items"], &format!("{field_path}[]"), rows);
        }
    }
}

fn crd_page() -> String {
    let mut page = String::from(
        "# Custom resources\n\n\
         Generated from the CRDs' schemas (`tests/reference.rs`); what `kubectl explain` shows.\n",
    );
    for crd in definitions() {
        let crd = serde_json::to_value(crd).unwrap();
        let kind = crd["spec"]["names"]["kind"].as_str().unwrap();
        for version in crd["spec"]["versions"].as_array().unwrap() {
            let schema = &version["schema"]["openAPIV3Schema"];
            let _ = write!(
                page,
                "\n## {kind} ({}/{})\n\n{}\n\n| field | type | default | required | description |\n|---|---|---|---|---|\n",
                crd["spec"]["group"].as_str().unwrap(),
                version["name"].as_str().unwrap(),
                cell(schema["description"].as_str().unwrap_or("")),
            );
            for part in ["spec", "status"] {
                if schema["properties"][part].is_object() {
                    let mut rows = String::new();
                    let _ = writeln!(
                        rows,
                        "| `{part}` | object | | | {} |",
                        cell(
                            schema["properties"][part]["description"]
                                .as_str()
                                .unwrap_or("")
                        )
                    );
                    fields(&schema["properties"][part], part, &mut rows);
                    page.push_str(&rows);
                }
            }
        }
    }
    page
}

fn metrics_page() -> String {
    let mut page = String::from(
        "# Metrics\n\n\
         Generated from the controller's registry (`tests/reference.rs`): every metric `/metrics` \
         serves, in its order, with its type, the names of its labels and its help. What the \
         labels hold is in [Operations](../operations/index.md).\n\n\
         | metric | type | labels | help |\n|---|---|---|---|\n",
    );
    for metric in Metrics::new().descriptions() {
        let labels = metric
            .labels
            .iter()
            .map(|label| format!("`{label}`"))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(
            page,
            "| `{}` | {} | {} | {} |",
            metric.name,
            metric.kind,
            labels,
            cell(&metric.help)
        );
    }
    page
}

fn flags_page() -> String {
    let mut page = String::from(
        "# Command line\n\n\
         Generated from the command line's definition (`tests/reference.rs`): every flag of every \
         subcommand, the environment variable it is also read from, and its default. \
         `iothub-dynreg crd` prints the CRDs (`crds/` holds them, checked in CI).\n",
    );
    let mut cli = Cli::command();
    cli.build();
    for command in cli.get_subcommands() {
        let name = command.get_name();
        if name == "help" {
            continue;
        }
        let about = command
            .get_about()
            .map(|about| about.to_string())
            .unwrap_or_default();
        let _ = write!(
            page,
            "\n## `iothub-dynreg {name}`\n\n{}\n\n| flag | environment | default | |\n|---|---|---|---|\n",
            cell(&about)
        );
        for arg in command.get_arguments() {
            let Some(long) = arg.get_long() else {
                continue;
            };
            if long == "help" || arg.is_hide_set() {
                continue;
            }
            let value = arg
                .get_value_names()
                .map(|names| {
                    format!(
                        " {}",
                        names
                            .iter()
                            .map(|n| n.to_string())
                            .collect::<Vec<_>>()
                            .join(" ")
                    )
                })
                .unwrap_or_default();
            let takes_value = arg.get_num_args().is_some_and(|n| n.takes_values());
            let flag = if takes_value {
                format!(
                    "`--{long}{}`",
                    if value.is_empty() {
                        " VALUE".to_owned()
                    } else {
                        value
                    }
                )
            } else {
                format!("`--{long}`")
            };
            let env = arg
                .get_env()
                .map(|env| format!("`{}`", env.to_string_lossy()))
                .unwrap_or_default();
            let defaults: Vec<String> = arg
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy())
                .filter(|v| !v.is_empty())
                .map(|v| format!("`{v}`"))
                .collect();
            let help = arg
                .get_help()
                .map(|help| help.to_string())
                .unwrap_or_default();
            let _ = writeln!(
                page,
                "| {flag} | {env} | {} | {} |",
                defaults.join(", "),
                cell(&help)
            );
        }
    }
    page
}

#[test]
fn the_flags_reference_is_generated_from_the_command_line() {
    let page = flags_page();
    assert!(page.contains("`--kube-api-qps"), "{page}");
    check_or_update("flags.md", &page);
}

#[test]
fn the_crd_reference_is_generated_from_the_schemas() {
    check_or_update("crd.md", &crd_page());
}

#[test]
fn the_metrics_reference_is_generated_from_the_registry() {
    let page = metrics_page();
    assert!(
        page.contains("`iothub_dynreg_reconciles_total` | counter"),
        "{page}"
    );
    check_or_update("metrics.md", &page);
}
