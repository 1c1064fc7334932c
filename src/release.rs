//! Releases on disk: `releases/<deployment id>-<short sha>/<executable>` under the data
//! directory, installed atomically, pruned to the newest N, and the `current` link that
//! systemd and `just run` start.

use anyhow::{Context, bail};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::db::DeploymentId;

/// Directory of releases inside the data directory.
pub const RELEASES_DIR: &str = "releases";
/// The link (inside the data directory) to the serving release's executable.
pub const CURRENT_LINK: &str = "current";
/// Prefix of a release being written; such directories are never served.
const TMP_PREFIX: &str = ".tmp-";

pub fn releases_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(RELEASES_DIR)
}

/// The release name of a deployment.
pub fn release_name(id: DeploymentId, sha: &str) -> String {
    format!("{id}-{}", &sha[..sha.len().min(12)])
}

/// The executable's path inside release `name`.
pub fn executable(data_dir: &Path, name: &str, artifact: &Path) -> PathBuf {
    let file = artifact.file_name().unwrap_or(artifact.as_os_str());
    releases_dir(data_dir).join(name).join(file)
}

/// Copies `artifact` into release `name`: written under a temporary name, fsynced, made
/// executable, then renamed into place, so a release directory is complete or absent.
pub fn install(data_dir: &Path, name: &str, artifact: &Path) -> anyhow::Result<PathBuf> {
    let meta = std::fs::metadata(artifact)
        .with_context(|| format!("the build produced no artifact at {}", artifact.display()))?;
    if !meta.is_file() {
        bail!("the artifact {} is not a file", artifact.display());
    }
    let dir = releases_dir(data_dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = dir.join(format!("{TMP_PREFIX}{name}"));
    let target = dir.join(name);
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    std::fs::create_dir(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let file_name = artifact
        .file_name()
        .context("the artifact has no file name")?;
    let dest = tmp.join(file_name);
    std::fs::copy(artifact, &dest)
        .with_context(|| format!("cannot copy {} to {}", artifact.display(), dest.display()))?;
    let file = std::fs::File::open(&dest)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o755))?;
    file.sync_all()?;
    sync_dir(&tmp)?;
    if target.exists() {
        std::fs::remove_dir_all(&target)?;
    }
    std::fs::rename(&tmp, &target)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), target.display()))?;
    sync_dir(&dir)?;
    Ok(target.join(file_name))
}

fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync {}", dir.display()))
}

/// Points `current` at `executable`, atomically (a new link renamed over the old one).
pub fn set_current(data_dir: &Path, executable: &Path) -> anyhow::Result<()> {
    let link = data_dir.join(CURRENT_LINK);
    let tmp = data_dir.join(format!("{CURRENT_LINK}.new"));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(executable, &tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    std::fs::rename(&tmp, &link).with_context(|| format!("cannot update {}", link.display()))?;
    sync_dir(data_dir)
}

/// The release name `current` points into, if any.
pub fn current_release(data_dir: &Path) -> Option<String> {
    let target = std::fs::read_link(data_dir.join(CURRENT_LINK)).ok()?;
    release_of(data_dir, &target)
}

/// The release name an executable path lies in, if it is inside `releases/`.
pub fn release_of(data_dir: &Path, path: &Path) -> Option<String> {
    let releases = releases_dir(data_dir);
    let releases = releases.canonicalize().unwrap_or(releases);
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let rest = path.strip_prefix(&releases).ok()?;
    let name = rest.components().next()?.as_os_str().to_str()?.to_string();
    (!name.starts_with(TMP_PREFIX)).then_some(name)
}

fn release_id(name: &str) -> Option<DeploymentId> {
    name.split_once('-')?.0.parse().ok()
}

/// Deletes all but the newest `keep` releases, never one named in `protect` (the serving
/// release and the one before it). Returns the names deleted.
pub fn prune(data_dir: &Path, keep: usize, protect: &[String]) -> anyhow::Result<Vec<String>> {
    let dir = releases_dir(data_dir);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let mut releases: Vec<(DeploymentId, String)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter_map(|name| release_id(&name).map(|id| (id, name)))
        .collect();
    releases.sort_by_key(|r| std::cmp::Reverse(r.0));
    let mut deleted = Vec::new();
    for (_, name) in releases.into_iter().skip(keep) {
        if protect.contains(&name) {
            continue;
        }
        std::fs::remove_dir_all(dir.join(&name))
            .with_context(|| format!("cannot delete release {name}"))?;
        deleted.push(name);
    }
    Ok(deleted)
}

/// Writes `contents` to `path` atomically (temporary file, fsync, rename).
pub fn write_atomic(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file =
        std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
