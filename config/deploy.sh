#!/bin/sh
# Submit a folder's migrations to a zdmproxy daemon in version order and wait for each; stop the
# deploy at the first that does not succeed, with its error. Needs curl and a POSIX shell (sed,
# awk, sort: busybox's are enough, so the curlimages/curl image runs it).
#
#   config/deploy.sh db/migrations
#
# A file's migration id is its name without .sql, as `zdmproxy apply DIR` names them, so both
# agree in the journal. Versions: Flyway's V<version>__<description>.sql or <number>[_<desc>].sql;
# they compare as numbers part by part (V10 after V9, V1.1 = V1_1). Other files are skipped.
# Submitting is idempotent (PUT with the same SQL returns the existing migration), so a re-run
# of the deploy after any failure is safe: what succeeded is not run again.
#
# Environment:
#   ZDMPROXY_URL          daemon address (default http://127.0.0.1:8642)
#   ZDMPROXY_UNIX_SOCKET  talk to the daemon over this unix socket instead (curl --unix-socket)
#   ZDMPROXY_TOKEN_FILE   file holding the bearer token (it never appears in the process list)
#   ZDMPROXY_WAIT_S       how long to wait for one migration (default 3600)
#   ZDMPROXY_POLL_S       longest single long-poll (default 60; the PUT is repeated until done)
# Exit codes (as `zdmproxy apply`): 0 all succeeded; 1 a migration failed or was cancelled (its
# error is printed): fix it; 2 bad usage or a request the daemon refused (unparsable SQL ...);
# 3 the id exists with different SQL; 69 daemon unreachable; 75 still running, or paused, when
# the wait ended (re-run: it waits again); 78 the daemon refused the token.
set -eu

url=${ZDMPROXY_URL:-http://127.0.0.1:8642}
wait_s=${ZDMPROXY_WAIT_S:-3600}
poll_s=${ZDMPROXY_POLL_S:-60}

say() { printf 'deploy: %s\n' "$*" >&2; }
die() { code=$1; shift; say "$*"; exit "$code"; }

[ $# -eq 1 ] || die 2 "usage: $0 DIR (a folder of V<version>__<name>.sql or <number>_<name>.sql files)"
dir=$1
[ -d "$dir" ] || die 2 "$dir: not a directory"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT INT TERM

set -- --silent --show-error --max-time $((poll_s + 30))
[ -n "${ZDMPROXY_UNIX_SOCKET:-}" ] && set -- "$@" --unix-socket "$ZDMPROXY_UNIX_SOCKET"
if [ -n "${ZDMPROXY_TOKEN_FILE:-}" ]; then
    (umask 077 && printf 'Authorization: Bearer %s\n' "$(cat "$ZDMPROXY_TOKEN_FILE")" > "$work/auth")
    set -- "$@" --header "@$work/auth"
fi

# json_value KEY [WITHIN]: the first value of "KEY" in the JSON document on stdin (after the
# first "WITHIN": when given), unescaped. Enough for the daemon's compact JSON; no jq needed.
json_value() {
    awk -v key="\"$1\":" -v within="${2:+\"$2\":}" '
        { doc = doc $0 }
        END {
            if (within != "") { i = index(doc, within); if (!i) exit; doc = substr(doc, i + length(within)) }
            i = index(doc, key); if (!i) exit
            rest = substr(doc, i + length(key))
            if (substr(rest, 1, 1) != "\"") { match(rest, /^[^,}\]]*/); print substr(rest, 1, RLENGTH); exit }
            out = ""
            for (j = 2; j <= length(rest); j++) {
                c = substr(rest, j, 1)
                if (c == "\"") break
                if (c == "\\") { j++; c = substr(rest, j, 1); if (c == "n") c = "\n"; else if (c == "t") c = "\t" }
                out = out c
            }
            print out
        }'
}

# json_body FILE: {"sql": "<the file as a JSON string>"}. sed escapes (awk's gsub treats
# backslashes differently in every awk), awk joins the lines with \n.
json_body() {
    tab=$(printf '\t')
    cr=$(printf '\r')
    sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e "s/$tab/\\\\t/g" -e "s/$cr/\\\\r/g" "$1" |
        awk 'BEGIN { ORS = ""; print "{\"sql\":\"" } { if (NR > 1) print "\\n"; print } END { print "\"}" }'
}

# The folder's files with a sortable key: every number in the version zero-padded.
for path in "$dir"/*.sql; do
    [ -e "$path" ] || continue
    name=${path##*/}
    version=$(printf '%s\n' "$name" | sed -n -e 's/^V\([0-9][0-9._]*\)__.*\.sql$/\1/p' -e 's/^\([0-9][0-9]*\)\(_.*\)\{0,1\}\.sql$/\1/p')
    if [ -z "$version" ]; then
        say "skipping $name: not V<version>__<name>.sql or <number>_<name>.sql"
        continue
    fi
    # 1 = 1.0 = 01 (as `zdmproxy apply DIR` and Flyway): trailing zero parts do not count.
    key=$(printf '%s\n' "$version" | awk -F'[._]' '{ n = NF; while (n > 1 && $n + 0 == 0) n--
                                                     for (i = 1; i <= n; i++) printf "%020d.", $i }')
    printf '%s %s\n' "$key" "$path"
done | sort > "$work/order"

[ -s "$work/order" ] || die 2 "$dir: no migration files"
if [ "$(cut -d' ' -f1 "$work/order" | uniq -d)" != "" ]; then
    die 2 "$dir: two files with the same version: $(cut -d' ' -f1 "$work/order" | uniq -d | head -n1)"
fi

count=0
while read -r _ path; do
    name=${path##*/}
    id=${name%.sql}
    json_body "$path" > "$work/request"
    started=$(date +%s)
    say "$id: submitting"
    while :; do
        left=$((wait_s - ($(date +%s) - started)))
        chunk=$((left < poll_s ? left : poll_s))
        [ "$chunk" -ge 1 ] || chunk=1
        status=$(curl "$@" --output "$work/response" --write-out '%{http_code}' --request PUT \
            --header 'Content-Type: application/json' --data-binary "@$work/request" \
            "$url/v1/migrations/$id?wait=$chunk") || status=000
        case $status in
            000) die 69 "$id: daemon unreachable at ${ZDMPROXY_UNIX_SOCKET:-$url}" ;;
            401|403) die 78 "$id: the daemon refused the token ($status); check ZDMPROXY_TOKEN_FILE" ;;
            409) die 3 "$id: $(json_value detail < "$work/response") (same id, different SQL: put the change in a new file)" ;;
            5??) die 69 "$id: daemon error $status: $(json_value detail < "$work/response")" ;;
            2??) ;;
            *) die 2 "$id: refused ($status): $(json_value detail < "$work/response")" ;;
        esac
        state=$(json_value state < "$work/response")
        case $state in
            succeeded) say "$id: succeeded"; break ;;
            failed|cancelled)
                message=$(json_value message error < "$work/response")
                sqlstate=$(json_value sqlstate error < "$work/response")
                die 1 "$id: $state: ${message:-no error recorded}${sqlstate:+ (SQLSTATE $sqlstate)}" ;;
        esac
        case $state in
            paused) die 75 "$id: paused by an operator; resume it, then re-run the deploy" ;;
            queued|running) ;;
            *) die 69 "$id: unexpected answer from the daemon ($status): $(head -c 300 "$work/response")" ;;
        esac
        if [ "$left" -le "$chunk" ]; then
            die 75 "$id: still $state after ${wait_s}s; re-run the deploy to wait again"
        fi
        say "$id: $state"
    done
    count=$((count + 1))
done < "$work/order"
say "all $count migration(s) succeeded"
