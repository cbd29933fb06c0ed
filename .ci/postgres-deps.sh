#!/usr/bin/env bash
# PostgreSQL server binaries for tests/test_sql.py (a throw-away cluster is started by the test).
# Called by .ci/run before the tests.  Installs Debian's package only when initdb is missing;
# the Python driver (psycopg) comes with the project's dev extra.
set -euo pipefail
have_initdb() {
    [ -x /usr/local/bin/initdb ] && return 0
    compgen -G "/usr/lib/postgresql/*/bin/initdb" > /dev/null && return 0
    command -v initdb > /dev/null
}
if ! have_initdb; then
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get > /dev/null; then
        echo "postgres-deps: initdb not found and cannot apt-get install (not root or no apt);" \
             "the PostgreSQL tests will be skipped" >&2
        exit 0
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends postgresql > /dev/null
fi
# the server refuses to run as root: the tests run it as 'nobody' through runuser (util-linux)
command -v runuser > /dev/null || echo "postgres-deps: runuser missing; PostgreSQL tests need it under root" >&2
echo "postgres-deps: initdb at $( { ls /usr/local/bin/initdb /usr/lib/postgresql/*/bin/initdb 2>/dev/null || command -v initdb; } | head -1)"
