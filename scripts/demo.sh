#!/usr/bin/env bash
# `just demo`: the original demo for a person watching. A bare repository in a temporary
# place stands in for GitHub, holding a copy of this project; the server runs a release
# built from it, then four commits, each changing the text `/test` answers, are pushed a
# few seconds apart with a signed webhook each. Watch the dashboard: the first deploys,
# the ones that arrive meanwhile wait, only the newest runs next. Ctrl-C stops and cleans up.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
port=${DEMO_PORT:-8080}
gap=${DEMO_GAP:-3}
# Builds share this directory (kept between demos), so only the first one is cold.
target="$root/target/demo"
tmp=$(mktemp -d)
server_pid=""
cleanup() {
    if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
    rm -rf "$tmp"
    echo "demo stopped; removed $tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "preparing a local GitHub in $tmp"
git init --quiet --bare -b main "$tmp/github.git"
git init --quiet -b main "$tmp/work"
(cd "$root" && git ls-files -z --cached --others --exclude-standard) | while IFS= read -r -d '' f; do
    [ -f "$root/$f" ] || continue
    mkdir -p "$tmp/work/$(dirname "$f")"
    cp "$root/$f" "$tmp/work/$f"
done
cd "$tmp/work"
git add -A
git -c user.name=demo -c user.email=demo@example.com commit --quiet -m "selfdeploy, as it is"
git remote add origin "$tmp/github.git"
git push --quiet origin HEAD:main

say "building the first release (the first demo compiles the whole server: a few minutes)"
cargo build --release --locked --target-dir "$target" --bin selfdeploy --bin selfdeploy-push
data="$tmp/data"
first="0-$(git rev-parse --short=12 HEAD)"
mkdir -p "$data/releases/$first"
cp "$target/release/selfdeploy" "$data/releases/$first/selfdeploy"
ln -s "$data/releases/$first/selfdeploy" "$data/current"
cp "$target/release/selfdeploy-push" "$tmp/selfdeploy-push"

export SELFDEPLOY_DATA_DIR="$data"
export SELFDEPLOY_LISTEN="127.0.0.1:$port"
export SELFDEPLOY_REPO="$tmp/github.git"
export SELFDEPLOY_WEBHOOK_SECRET="demo-secret-$(date +%s)-$$"
export SELFDEPLOY_BUILD_COMMAND="cargo build --release --locked --target-dir $target --bin selfdeploy && mkdir -p target/release && cp $target/release/selfdeploy target/release/selfdeploy"
"$data/current" > "$tmp/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
    sleep 0.1
done
say "dashboard: http://127.0.0.1:$port/   (server log: $tmp/server.log)"
echo "/test now says: $(curl -fsS "http://127.0.0.1:$port/test")"

for n in 1 2 3 4; do
    sed -i "s/^pub const TEST_TEXT: &str = .*/pub const TEST_TEXT: \&str = \"hello from demo push $n\";/" src/about.rs
    git -c user.name=demo -c user.email=demo@example.com commit --quiet -am "/test says: hello from demo push $n"
    git push --quiet origin HEAD:main
    say "push $n: $(git rev-parse --short HEAD)"
    "$tmp/selfdeploy-push" --url "http://127.0.0.1:$port" --repo . --branch main --repository local/demo
    [ "$n" -lt 4 ] && sleep "$gap"
done

say "watch it deploy; /test, /version and the queue every few seconds (Ctrl-C to stop)"
while kill -0 "$server_pid" 2>/dev/null; do
    printf '%s  /test: %-28s pid %s  %s\n' "$(date +%T)" \
        "$(curl -fsS "http://127.0.0.1:$port/test" 2>/dev/null || echo '(switching)')" \
        "$(curl -fsS "http://127.0.0.1:$port/version" 2>/dev/null | sed -n 's/.*"pid":\([0-9]*\).*/\1/p')" \
        "$(curl -fsS "http://127.0.0.1:$port/api/queue" 2>/dev/null)"
    sleep 5
done
echo "the server stopped; its log:"; tail -20 "$tmp/server.log"
