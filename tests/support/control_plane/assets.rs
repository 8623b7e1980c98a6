//! Where the control plane's executables come from: a directory named by
//! `IOTHUB_DYNREG_KUBE_BIN` (as envtest's assets), else `../shared/kube/bin/*.gz` unpacked once
//! into `target/`, checked against their SHA256SUMS; etcd from that directory or the PATH.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The environment variable naming a directory with ready `kube-apiserver`,
/// `kube-controller-manager` (and optionally `etcd`) executables.
pub const KUBE_BIN_VARIABLE: &str = "IOTHUB_DYNREG_KUBE_BIN";

/// Executables of one control plane.
#[derive(Clone, Debug)]
pub struct Executables {
    pub etcd: PathBuf,
    pub apiserver: PathBuf,
    pub controller_manager: PathBuf,
}

/// Why the executables cannot be had.
#[derive(Debug)]
pub enum Unavailable {
    /// An executable is not here: the one reason a test may skip (outside CI).
    Missing(String),
    /// They are here but broken (a checksum that differs, an archive that does not unpack).
    Broken(String),
}

/// Finds or unpacks the executables; `Err` says what is missing or broken, and how to fix it.
pub fn locate() -> Result<Executables, Unavailable> {
    let kube_dir = match std::env::var_os(KUBE_BIN_VARIABLE) {
        Some(dir) => PathBuf::from(dir),
        None => unpack_shared()?,
    };
    let apiserver = executable_in(&kube_dir, "kube-apiserver").map_err(Unavailable::Missing)?;
    let controller_manager =
        executable_in(&kube_dir, "kube-controller-manager").map_err(Unavailable::Missing)?;
    let etcd = executable_in(&kube_dir, "etcd")
        .or_else(|_| on_path("etcd"))
        .map_err(|_| {
            Unavailable::Missing(
                "etcd is not on the PATH (install Debian's etcd-server, or put etcd in \
                 $IOTHUB_DYNREG_KUBE_BIN)"
                    .to_owned(),
            )
        })?;
    Ok(Executables {
        etcd,
        apiserver,
        controller_manager,
    })
}

fn executable_in(dir: &Path, name: &str) -> Result<PathBuf, String> {
    let path = dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!("{} does not exist", path.display()))
    }
}

fn on_path(name: &str) -> Result<PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| format!("{name} is not on the PATH"))
}

/// `../shared/kube/bin` beside the repository.
fn shared_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/kube/bin")
}

/// Unpacks each `*.gz` listed in SHA256SUMS into `target/tmp/kube-bin/<digest>/`, once: a
/// directory per digest means a new release never meets an old unpacked copy, and each file is
/// written under a temporary name and renamed, so test binaries running in parallel never see
/// half a file.
fn unpack_shared() -> Result<PathBuf, Unavailable> {
    let source = shared_dir();
    let sums_path = source.join("SHA256SUMS");
    let sums = std::fs::read_to_string(&sums_path).map_err(|e| {
        Unavailable::Missing(format!(
            "{} cannot be read ({e}): set {KUBE_BIN_VARIABLE} to a directory with \
             kube-apiserver and kube-controller-manager",
            sums_path.display()
        ))
    })?;
    let entries: Vec<(&str, &str)> = sums
        .lines()
        .filter_map(|line| line.split_once("  "))
        .collect();
    let combined: String = entries.iter().map(|(digest, _)| &digest[..12]).collect();
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("kube-bin-{combined}"));
    std::fs::create_dir_all(&target)
        .map_err(|e| Unavailable::Broken(format!("{}: {e}", target.display())))?;
    for (digest, file) in entries {
        let name = file.trim_end_matches(".gz");
        let unpacked = target.join(name);
        if unpacked.is_file() {
            continue;
        }
        let compressed = std::fs::read(source.join(file))
            .map_err(|e| Unavailable::Broken(format!("{}: {e}", source.join(file).display())))?;
        let actual = hex::encode(Sha256::digest(&compressed));
        if actual != digest {
            return Err(Unavailable::Broken(format!(
                "{file}: SHA-256 {actual} differs from SHA256SUMS ({digest})"
            )));
        }
        let mut bytes = Vec::new();
        flate2::read::GzDecoder::new(compressed.as_slice())
            .read_to_end(&mut bytes)
            .map_err(|e| Unavailable::Broken(format!("{file}: cannot unpack: {e}")))?;
        let partial = target.join(format!("{name}.{}.partial", std::process::id()));
        std::fs::write(&partial, &bytes)
            .map_err(|e| Unavailable::Broken(format!("{}: {e}", partial.display())))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| Unavailable::Broken(format!("{}: {e}", partial.display())))?;
        std::fs::rename(&partial, &unpacked)
            .map_err(|e| Unavailable::Broken(format!("{}: {e}", unpacked.display())))?;
    }
    Ok(target)
}
