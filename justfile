# selfdeploy's tasks. `just --list` shows them.

# Run the server from this checkout (settings: README.md, or `cargo run -- --help`).
run *ARGS:
    cargo run --release --bin selfdeploy -- {{ARGS}}

# Run every test (needs `./setup.sh` once for the browser test).
test:
    cargo test

# Send a signed push webhook for HEAD to a running server (secret from the data dir).
push URL="http://127.0.0.1:8080":
    cargo run --quiet --bin selfdeploy-push -- --url {{URL}}

# The checks CI runs before the tests.
lint:
    cargo fmt --check
    cargo clippy --all-targets -- -D warnings
