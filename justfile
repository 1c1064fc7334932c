# selfdeploy's tasks. `just --list` shows them.

# Where the server keeps its database, workspace and releases (as the server's default).
data := env_var_or_default("SELFDEPLOY_DATA_DIR", "selfdeploy-data")

# Run the serving release (`current`; the first one is built from this checkout).
run *ARGS: bootstrap
    exec "{{data}}/current" {{ARGS}}

# Build this checkout once and make it the serving release, unless one exists already.
bootstrap:
    #!/usr/bin/env bash
    set -euo pipefail
    data="{{data}}"
    [ -e "$data/current" ] && exit 0
    cargo build --release --locked --bin selfdeploy
    release="0-$(git rev-parse --short=12 HEAD 2>/dev/null || echo local)"
    mkdir -p "$data/releases/$release"
    cp target/release/selfdeploy "$data/releases/$release/selfdeploy"
    ln -sfn "$(cd "$data" && pwd)/releases/$release/selfdeploy" "$data/current"
    echo "installed the first release $release"

# Run every test (needs `./setup.sh` once, for the browser test).
test:
    cargo test

# Send a signed push webhook for HEAD to a running server (secret from the data dir).
push URL="http://127.0.0.1:8080":
    cargo run --quiet --bin selfdeploy-push -- --url {{URL}} --secret-file "{{data}}/webhook-secret"

# The original demo: a local "GitHub", four quick pushes, a dashboard to watch.
demo:
    scripts/demo.sh

# The checks CI runs before the tests.
lint:
    cargo fmt --check
    cargo clippy --all-targets -- -D warnings
