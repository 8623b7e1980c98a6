//! Reading manifests the way `kubectl apply -f` does: files, directories (recursively, the
//! `*.yaml`, `*.yml` and `*.json` files in them, in name order) and `-` for standard input;
//! multi-document YAML; `List` objects unpacked.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

/// The group of the DynamicRegistration kind.
const GROUP: &str = "iothub.dynreg.io";
const KIND: &str = "DynamicRegistration";

/// Where a document came from, for messages: `examples/3.yaml, document 2`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// The file, or `-` for standard input.
    pub file: String,
    /// 1-based position of the document in the file.
    pub document: usize,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}, document {}", self.file, self.document)
    }
}

/// A DynamicRegistration as written, not yet validated.
#[derive(Clone, Debug)]
pub struct Manifest {
    /// Where it was read.
    pub origin: Origin,
    /// The object as parsed.
    pub object: Value,
}

/// What the inputs held.
#[derive(Debug, Default)]
pub struct Inputs {
    /// The DynamicRegistrations, in input order.
    pub manifests: Vec<Manifest>,
    /// Documents of other kinds, skipped.
    pub skipped: usize,
}

/// Why the inputs could not be read.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{origin}: not valid YAML or JSON: {detail}")]
    Parse { origin: Origin, detail: String },
    #[error("{origin}: {detail}")]
    Shape { origin: Origin, detail: String },
}

/// Reads every path in order; `stdin` is read for `-`.
pub fn read(paths: &[PathBuf], stdin: &mut dyn Read) -> Result<Inputs, InputError> {
    let mut inputs = Inputs::default();
    for path in paths {
        if path.as_os_str() == "-" {
            let mut text = String::new();
            stdin
                .read_to_string(&mut text)
                .map_err(|source| InputError::Read {
                    path: "-".to_owned(),
                    source,
                })?;
            parse_file("-", &text, &mut inputs)?;
            continue;
        }
        for file in files_under(path)? {
            let text = std::fs::read_to_string(&file).map_err(|source| InputError::Read {
                path: file.display().to_string(),
                source,
            })?;
            parse_file(&file.display().to_string(), &text, &mut inputs)?;
        }
    }
    Ok(inputs)
}

/// The path itself when it is a file (whatever its name), else the manifest files below it.
fn files_under(path: &Path) -> Result<Vec<PathBuf>, InputError> {
    let unreadable = |source| InputError::Read {
        path: path.display().to_string(),
        source,
    };
    if !path.metadata().map_err(unreadable)?.is_dir() {
        return Ok(vec![path.to_owned()]);
    }
    let mut entries = std::fs::read_dir(path)
        .map_err(unreadable)?
        .map(|entry| entry.map(|entry| entry.path()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(unreadable)?;
    entries.sort();
    let mut files = Vec::new();
    for entry in entries {
        if entry.is_dir() {
            files.extend(files_under(&entry)?);
        } else if is_manifest_name(&entry) {
            files.push(entry);
        }
    }
    Ok(files)
}

fn is_manifest_name(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|extension| extension.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

fn parse_file(file: &str, text: &str, inputs: &mut Inputs) -> Result<(), InputError> {
    // JSON is YAML: one parser reads both, and a JSON file is a single document.
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let origin = Origin {
            file: file.to_owned(),
            document: index + 1,
        };
        let parse_error = |detail: String| InputError::Parse {
            origin: origin.clone(),
            detail,
        };
        // Through YAML's own value first: it refuses a key given twice, as kubectl does, where
        // a JSON map would silently keep the last.
        let yaml = serde_yaml::Value::deserialize(document)
            .map_err(|error| parse_error(error.to_string()))?;
        let value = serde_json::to_value(yaml).map_err(|error| parse_error(error.to_string()))?;
        collect(origin, value, inputs)?;
    }
    Ok(())
}

fn collect(origin: Origin, value: Value, inputs: &mut Inputs) -> Result<(), InputError> {
    let shape = |detail: &str| InputError::Shape {
        origin: origin.clone(),
        detail: detail.to_owned(),
    };
    match value {
        // An empty document (a stray `---`, comments only) is no object.
        Value::Null => Ok(()),
        Value::Object(ref object) => {
            let kind = object.get("kind").and_then(Value::as_str);
            let api_version = object.get("apiVersion").and_then(Value::as_str);
            if kind.is_none() || api_version.is_none() {
                return Err(shape(
                    "not a Kubernetes object: apiVersion and kind are required",
                ));
            }
            if kind == Some("List") {
                let Some(items) = object.get("items").and_then(Value::as_array) else {
                    return Err(shape("a List without items"));
                };
                for item in items.clone() {
                    collect(origin.clone(), item, inputs)?;
                }
            } else if kind == Some(KIND) && api_version.is_some_and(is_our_group) {
                inputs.manifests.push(Manifest {
                    origin,
                    object: value,
                });
            } else {
                inputs.skipped += 1;
            }
            Ok(())
        }
        _ => Err(shape("not a Kubernetes object: a mapping is expected")),
    }
}

fn is_our_group(api_version: &str) -> bool {
    api_version
        .split_once('/')
        .is_some_and(|(group, _)| group == GROUP)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Inputs, InputError> {
        let mut inputs = Inputs::default();
        parse_file("in.yaml", text, &mut inputs).map(|()| inputs)
    }

    const REGISTRATION: &str =
        "apiVersion: iothub.dynreg.io/v1alpha1\nkind: DynamicRegistration\nmetadata: {name: a}\n";

    #[test]
    fn documents_of_other_kinds_are_counted_and_skipped() {
        let text = format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: fleet}}\n---\n# only a comment\n---\n{REGISTRATION}"
        );
        let inputs = parse(&text).unwrap();
        assert_eq!(inputs.manifests.len(), 1);
        assert_eq!(inputs.skipped, 1);
        assert_eq!(
            inputs.manifests[0].origin,
            Origin {
                file: "in.yaml".to_owned(),
                document: 3
            }
        );
    }

    #[test]
    fn a_key_given_twice_is_refused_as_kubectl_refuses_it() {
        let text = format!("{REGISTRATION}{REGISTRATION}");
        let error = parse(&text).unwrap_err().to_string();
        assert!(error.contains("duplicate entry with key"), "{error}");
    }

    #[test]
    fn a_kind_of_the_same_name_in_another_group_is_not_ours() {
        let text = "apiVersion: example.com/v1\nkind: DynamicRegistration\nmetadata: {name: a}\n";
        let inputs = parse(text).unwrap();
        assert_eq!((inputs.manifests.len(), inputs.skipped), (0, 1));
    }

    #[test]
    fn lists_are_unpacked() {
        let text = format!(
            "{{\"apiVersion\": \"v1\", \"kind\": \"List\", \"items\": [{}]}}",
            serde_json::to_string(&serde_yaml::from_str::<Value>(REGISTRATION).unwrap()).unwrap()
        );
        assert_eq!(parse(&text).unwrap().manifests.len(), 1);
    }

    #[test]
    fn a_broken_document_is_named_by_file_and_index() {
        let text = format!("{REGISTRATION}---\nspec: [unclosed\n");
        let error = parse(&text).unwrap_err().to_string();
        assert!(
            error.starts_with("in.yaml, document 2: not valid YAML or JSON"),
            "{error}"
        );
        let error = parse("- a\n- b\n").unwrap_err().to_string();
        assert_eq!(
            error,
            "in.yaml, document 1: not a Kubernetes object: a mapping is expected"
        );
    }

    #[test]
    fn directories_are_read_recursively_in_name_order() {
        let dir = std::env::temp_dir().join(format!("dynreg-manifests-{}", std::process::id()));
        let nested = dir.join("b-nested");
        std::fs::create_dir_all(&nested).unwrap();
        std::fs::write(
            dir.join("c.yaml"),
            REGISTRATION.replace("{name: a}", "{name: c}"),
        )
        .unwrap();
        std::fs::write(
            nested.join("b.yml"),
            REGISTRATION.replace("{name: a}", "{name: b}"),
        )
        .unwrap();
        std::fs::write(
            dir.join("a.json"),
            serde_json::to_string(&serde_yaml::from_str::<Value>(REGISTRATION).unwrap()).unwrap(),
        )
        .unwrap();
        std::fs::write(dir.join("notes.txt"), "not a manifest").unwrap();
        let inputs = read(std::slice::from_ref(&dir), &mut std::io::empty()).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let names: Vec<_> = inputs
            .manifests
            .iter()
            .map(|manifest| manifest.object["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["a", "b", "c"]);
    }

    #[test]
    fn standard_input_is_read_for_a_dash() {
        let inputs = read(&[PathBuf::from("-")], &mut REGISTRATION.as_bytes()).unwrap();
        assert_eq!(inputs.manifests[0].origin.file, "-");
    }
}
