//! The webhook secret: given, read from a file, or generated on first start and kept in the
//! data directory, readable by its owner only. Its value never reaches a log, page, error
//! message or the database; [`WebhookSecret`]'s `Debug` hides it.

use anyhow::{Context, bail};
use rand::RngCore;
use std::fmt;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::config::SecretSource;

/// File name of the generated secret inside the data directory.
pub const SECRET_FILE_NAME: &str = "webhook-secret";
/// Random bytes in a generated secret (hex-encoded, so 64 characters).
pub const GENERATED_SECRET_BYTES: usize = 32;
/// Fewest characters a secret may have: shorter ones are too easy to guess.
pub const MIN_SECRET_CHARS: usize = 16;

/// The shared secret GitHub signs deliveries with.
#[derive(Clone)]
pub struct WebhookSecret(String);

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(***)")
    }
}

impl WebhookSecret {
    pub fn new(value: impl Into<String>) -> Self {
        WebhookSecret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// What loading the secret did, for the start-up message.
pub enum SecretOrigin {
    Given,
    File(std::path::PathBuf),
    Generated(std::path::PathBuf),
}

/// Loads the secret, generating it when the source allows and the file is missing.
pub fn load(source: &SecretSource) -> anyhow::Result<(WebhookSecret, SecretOrigin)> {
    match source {
        SecretSource::Value(value) => Ok((WebhookSecret::new(value.trim()), SecretOrigin::Given)),
        SecretSource::File { path, generate } => {
            if *generate && !path.exists() {
                let secret = generate_file(path)?;
                return Ok((secret, SecretOrigin::Generated(path.clone())));
            }
            let text = std::fs::read_to_string(path).with_context(|| {
                format!("cannot read the webhook secret file {}", path.display())
            })?;
            let value = text.trim();
            if value.chars().count() < MIN_SECRET_CHARS {
                bail!(
                    "the webhook secret in {} is shorter than {MIN_SECRET_CHARS} characters",
                    path.display()
                );
            }
            Ok((WebhookSecret::new(value), SecretOrigin::File(path.clone())))
        }
    }
}

/// Loads the secret without ever writing one (check mode must not change anything).
pub fn load_existing(source: &SecretSource) -> anyhow::Result<WebhookSecret> {
    let source = match source {
        SecretSource::File { path, .. } => SecretSource::File {
            path: path.clone(),
            generate: false,
        },
        other => other.clone(),
    };
    load(&source).map(|(secret, _)| secret)
}

fn generate_file(path: &Path) -> anyhow::Result<WebhookSecret> {
    let mut bytes = [0u8; GENERATED_SECRET_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    let value = hex::encode(bytes);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    // create_new: never overwrite a secret that another process wrote meanwhile.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create the webhook secret file {}", path.display()))?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    writeln!(file, "{value}")?;
    file.sync_all()?;
    Ok(WebhookSecret::new(value))
}
