//! `selfdeploy-push`: sends a correctly signed GitHub `push` webhook for a commit of a local
//! repository to a running selfdeploy server, as GitHub would. For trying it by hand
//! (`just push`) and for the demo.

use anyhow::{Context, bail};
use clap::Parser;
use selfdeploy::secret::WebhookSecret;
use serde_json::json;
use std::path::PathBuf;
use std::process::Command;

/// Send a signed push webhook for a commit of a local git repository.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Base URL of the server.
    #[arg(long, env = "SELFDEPLOY_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// The webhook secret (default: read from --secret-file).
    #[arg(long, env = "SELFDEPLOY_WEBHOOK_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// File holding the webhook secret.
    #[arg(
        long,
        env = "SELFDEPLOY_WEBHOOK_SECRET_FILE",
        default_value = "selfdeploy-data/webhook-secret"
    )]
    secret_file: PathBuf,
    /// Repository whose commit is announced.
    #[arg(long, default_value = ".")]
    repo: PathBuf,
    /// The commit (default: HEAD).
    #[arg(long, default_value = "HEAD")]
    commit: String,
    /// Branch named in the push's ref.
    #[arg(long, env = "SELFDEPLOY_BRANCH", default_value = "main")]
    branch: String,
    /// `owner/name` named in the payload.
    #[arg(
        long,
        env = "SELFDEPLOY_GITHUB_REPOSITORY",
        default_value = "local/selfdeploy"
    )]
    repository: String,
}

fn git(repo: &PathBuf, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .output()?;
    if !out.status.success() {
        bail!(
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let secret = match args.secret {
        Some(s) => s,
        None => std::fs::read_to_string(&args.secret_file)
            .with_context(|| format!("cannot read the secret from {}", args.secret_file.display()))?
            .trim()
            .to_string(),
    };
    let sha = git(
        &args.repo,
        &["rev-parse", &format!("{}^{{commit}}", args.commit)],
    )?;
    let message = git(&args.repo, &["log", "-1", "--format=%B", &sha])?;
    let author = git(&args.repo, &["log", "-1", "--format=%an", &sha])?;
    let body = json!({
        "ref": format!("refs/heads/{}", args.branch),
        "before": "0000000000000000000000000000000000000000",
        "after": sha,
        "created": false,
        "deleted": false,
        "forced": false,
        "head_commit": { "id": sha, "message": message, "author": { "name": author } },
        "pusher": { "name": author },
        "repository": { "full_name": args.repository },
    })
    .to_string();
    let signature = selfdeploy::webhook::sign(&WebhookSecret::new(secret), body.as_bytes());
    let delivery = ulid::Ulid::generate().to_string();
    let host = args
        .url
        .strip_prefix("http://")
        .context("only http:// URLs are supported (a server on this machine)")?
        .trim_end_matches('/');
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (status, answer) = runtime.block_on(selfdeploy::probe::request(
        host,
        "POST",
        "/webhooks/github",
        &[
            ("Content-Type", "application/json"),
            ("X-GitHub-Event", "push"),
            ("X-GitHub-Delivery", &delivery),
            ("X-Hub-Signature-256", &signature),
        ],
        body.as_bytes(),
    ))?;
    println!("{} {status} {answer}", &sha[..12]);
    if !(200..300).contains(&status) {
        std::process::exit(1);
    }
    Ok(())
}
