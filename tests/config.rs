//! Settings: a bad one stops the binary with status 2 and a one-line error naming it;
//! the TOML file refuses unknown keys; flags and environment win over the file.

mod common;

use selfdeploy::Settings;
use selfdeploy::config::RestartStrategy;
use std::process::Command;

fn run_with(envs: &[(&str, &str)], args: &[&str]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_selfdeploy"));
    cmd.current_dir(dir.path())
        .env("SELFDEPLOY_DATA_DIR", dir.path().join("data"))
        .env("SELFDEPLOY_REPO", dir.path())
        .env("SELFDEPLOY_LISTEN", "127.0.0.1:0")
        .args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_settings_exit_2_naming_the_setting() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("SELFDEPLOY_TIME_LIMIT", "soon")], "time-limit"),
        (&[("SELFDEPLOY_TIME_LIMIT", "0")], "time_limit"),
        (&[("SELFDEPLOY_BRANCH", "a..b")], "branch"),
        (
            &[("SELFDEPLOY_GITHUB_REPOSITORY", "no-slash")],
            "github_repository",
        ),
        (&[("SELFDEPLOY_RESTART", "reboot")], "restart"),
        (&[("SELFDEPLOY_RESTART", "command")], "restart_command"),
        (&[("SELFDEPLOY_ARTIFACT", "/etc/passwd")], "artifact"),
        (&[("SELFDEPLOY_KEEP_RELEASES", "1")], "keep_releases"),
        (&[("SELFDEPLOY_LISTEN", "not-an-address")], "listen"),
        (&[("SELFDEPLOY_WEBHOOK_SECRET", "short")], "webhook_secret"),
    ];
    for (envs, setting) in cases {
        let (code, stderr) = run_with(envs, &[]);
        assert_eq!(code, 2, "{envs:?}: {stderr}");
        assert!(
            stderr.contains(setting),
            "{envs:?} should name {setting}: {stderr}"
        );
        assert!(
            !stderr.contains("short\n") || *setting != "webhook_secret",
            "no secret echoed"
        );
    }
}

#[test]
fn the_toml_file_refuses_unknown_keys() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("selfdeploy.toml");
    std::fs::write(&file, "branch = \"main\"\nbranhc = \"typo\"\n").unwrap();
    let (code, stderr) = run_with(&[], &["--config", file.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("branhc"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
}

#[test]
fn flags_and_environment_win_over_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("selfdeploy.toml");
    std::fs::write(
        &file,
        "branch = \"develop\"\ntime_limit = 60\nrestart = \"none\"\nrepo = \"/srv/app.git\"\nwebhook_secret = \"from-the-file-0123456789\"\n",
    )
    .unwrap();
    let settings = Settings {
        config: Some(file),
        branch: Some("main".into()),
        ..Default::default()
    };
    let config = settings.resolve().unwrap();
    assert_eq!(config.branch, "main");
    assert_eq!(config.time_limit.as_secs(), 60);
    assert_eq!(config.restart, RestartStrategy::None);
    assert_eq!(config.repo, "/srv/app.git");
}

#[test]
fn the_committed_example_file_is_valid() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/selfdeploy.example.toml");
    let settings = Settings {
        config: Some(example.into()),
        ..Default::default()
    };
    settings.resolve().expect("the example parses and checks");
}

#[tokio::test]
async fn a_generated_secret_is_private_and_never_printed() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = common::ServerProcess::start(&[
        ("SELFDEPLOY_DATA_DIR", data.display().to_string()),
        ("SELFDEPLOY_REPO", dir.path().display().to_string()),
        ("RUST_LOG", "debug".to_string()),
    ]);
    server.wait_healthy().await;
    let secret_file = data.join("webhook-secret");
    let secret = std::fs::read_to_string(&secret_file)
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(secret.len(), 64);
    let mode = std::fs::metadata(&secret_file)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    server.kill9();
    let printed = server.output();
    assert!(
        printed.contains("webhook-secret"),
        "says where the secret is: {printed}"
    );
    assert!(!printed.contains(&secret), "never prints the secret");
    // A second start keeps the same secret.
    let server2 = common::ServerProcess::start(&[
        ("SELFDEPLOY_DATA_DIR", data.display().to_string()),
        ("SELFDEPLOY_REPO", dir.path().display().to_string()),
    ]);
    server2.wait_healthy().await;
    assert_eq!(
        std::fs::read_to_string(&secret_file).unwrap().trim(),
        secret
    );
}
