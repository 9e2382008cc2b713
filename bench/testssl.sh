#!/usr/bin/env bash
# testssl.sh (Debian's testssl 3.0) against TQServer's HTTPS port:
# protocols, cipher suites, server preferences, forward secrecy, the
# known vulnerabilities (Heartbleed, ROBOT, CRIME, BREACH, POODLE, SWEET32,
# BEAST, LUCKY13, FREAK, LOGJAM, DROWN, renegotiation…), HSTS. Two runs:
# an ECDSA P-256 certificate and an RSA 2048 one, both from TQServer's
# internal CA (trusted with --add-ca), TLS 1.2 allowed (the default), HSTS
# on. Too slow for the test suite (minutes); the summary goes into the
# testssl section of docs/security.md, and the script fails if a finding
# is rated MEDIUM or worse.
#
#   bench/testssl.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root_dir=$(pwd)

source bench/lib.sh
trap 'echo "bench/testssl.sh: line $LINENO failed: $BASH_COMMAND" >&2' ERR
need_packages testssl:testssl.sh openssl:openssl

cargo build --release --locked -p tqserver >&2

# A CA and the two certificates it signs, for localhost.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$work/ca.key" \
    -out "$work/ca.pem" -days 400 -subj "/CN=testssl CA" 2>/dev/null
# As a public CA's certificate would be: 90 days (testssl rates under 30
# days left high), and a CRL address (it rates "no CRL nor OCSP URI" high;
# nothing is served there, and testssl does not fetch it).
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\ncrlDistributionPoints=URI:http://crl.invalid/testssl.crl\n' > "$work/ext"
for kind in ecdsa rsa; do
    if [[ $kind == ecdsa ]]; then newkey=(-newkey ec -pkeyopt ec_paramgen_curve:P-256); else newkey=(-newkey rsa:2048); fi
    openssl req "${newkey[@]}" -nodes -keyout "$work/$kind.key" -out "$work/$kind.csr" -subj /CN=localhost 2>/dev/null
    openssl x509 -req -in "$work/$kind.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial \
        -out "$work/$kind.pem" -days 90 -extfile "$work/ext" 2>/dev/null
    cat "$work/ca.pem" >> "$work/$kind.pem"
done

summary="$work/summary"
: > "$summary"
for kind in ecdsa rsa; do
    port=$(free_port)
    tls_port=$(free_port)
    mkdir -p "$work/$kind/config" "$work/$kind/workers/site/config" "$work/$kind/public"
    # testssl also rates the page's own security headers (none: medium).
    # They are the application's to send, as behind nginx; this one sends
    # the usual ones. TQServer adds only HSTS.
    cat > "$work/$kind/public/index.php" <<'PHP'
<?php
header('X-Content-Type-Options: nosniff');
header('X-Frame-Options: DENY');
header('Referrer-Policy: no-referrer');
header("Content-Security-Policy: default-src 'self'");
echo "<html><body>hello</body></html>\n";
PHP
    cat > "$work/$kind/config/server.yaml" <<EOF
server:
  host: 127.0.0.1
  port: $port
  tls:
    port: $tls_port
    hsts: true
    certificates:
      - { cert: $work/$kind.pem, key: $work/$kind.key }
workers:
  directory: workers
EOF
    cat > "$work/$kind/workers/site/config/worker.yaml" <<EOF
path: /
type: php
document_root: $work/$kind/public
php:
  pool:
    manager: static
    max_workers: 1
EOF
    (cd "$work/$kind" && exec "$root_dir/target/release/tqserver" --mode prod --admin-listen "" > "$work/$kind.log" 2>&1) &
    pids+=($!)
    for _ in $(seq 1 100); do curl -kfs "https://127.0.0.1:$tls_port/" >/dev/null && break; sleep 0.1; done
    echo "bench/testssl.sh: testssl against the $kind certificate (a few minutes)" >&2
    testssl --quiet --color 0 --warnings off --add-ca "$work/ca.pem" \
        --jsonfile "$work/$kind.json" "https://localhost:$tls_port/" > "$work/$kind.txt" 2>&1 || true
    # Kept for reading (the work folder goes at exit).
    mkdir -p target/testssl
    cp "$work/$kind.json" "$work/$kind.txt" target/testssl/
    python3 - "$work/$kind.json" "$kind" >> "$summary" <<'PY'
import json, sys
findings = json.load(open(sys.argv[1]))
order = ["OK", "INFO", "LOW", "MEDIUM", "HIGH", "CRITICAL", "WARN", "DEBUG"]
count = {}
for f in findings:
    count[f["severity"]] = count.get(f["severity"], 0) + 1
bad = [f for f in findings if f["severity"] in ("MEDIUM", "HIGH", "CRITICAL")]
low = [f for f in findings if f["severity"] == "LOW"]
pick = lambda i: next((f["finding"] for f in findings if f["id"] == i or f["id"].startswith(i + "_")), "?")
print(json.dumps({
    "kind": sys.argv[2],
    "count": {k: count[k] for k in order if k in count},
    "bad": [(f["id"], f["severity"], f["finding"]) for f in bad],
    "low": [(f["id"], f["finding"]) for f in low],
    "protocols": {p: pick(p) for p in ["SSLv2", "SSLv3", "TLS1", "TLS1_1", "TLS1_2", "TLS1_3"]},
    "ciphers": [f["finding"] for f in findings if f["id"].startswith("supportedciphers_")] or
               [f["finding"] for f in findings if f["id"].startswith("cipherorder_")],
    "vulns": {i: pick(i) for i in ["heartbleed", "CCS", "ticketbleed", "ROBOT", "secure_renego",
              "secure_client_renego", "CRIME_TLS", "BREACH", "POODLE_SSL", "fallback_SCSV", "SWEET32",
              "FREAK", "DROWN", "LOGJAM", "BEAST", "LUCKY13", "RC4"]},
    "hsts": pick("HSTS"),
}))
PY
done
cat "$summary" >&2

python3 - "$summary" <<'PY'
import datetime, json, pathlib, re, sys
sys.path.insert(0, "bench")
from benchdoc import machine
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
out = []
for r in runs:
    counts = ", ".join(f"{k} {v}" for k, v in r["count"].items())
    out.append(f"**{r['kind'].upper()} certificate** — findings by severity: {counts}.\n")
    out.append("| check | result |\n|---|---|")
    for p, v in r["protocols"].items():
        out.append(f"| {p} | {v} |")
    for i, v in r["vulns"].items():
        out.append(f"| {i} | {v} |")
    out.append(f"| HSTS | {r['hsts']} |")
    out.append("")
    if r["ciphers"]:
        out.append("Cipher suites offered: " + "; ".join(r["ciphers"]) + ".\n")
    if r["low"]:
        out.append("Rated LOW: " + "; ".join(f"`{i}`: {f}" for i, f in r["low"]) + ".\n")
    if r["bad"]:
        out.append("**Rated MEDIUM or worse:** " + "; ".join(f"`{i}` ({s}): {f}" for i, s, f in r["bad"]) + ".\n")
    else:
        out.append("Nothing rated MEDIUM, HIGH or CRITICAL.\n")
body = "\n".join(out)
section = f"""<!-- testssl:begin (written by bench/testssl.sh; edit the script, not this section) -->
Run {datetime.date.today().isoformat()} on {machine()} with `bench/testssl.sh`
(Debian's testssl 3.0, `--add-ca` for the test CA that signed the
certificates, TLS 1.2 and 1.3 allowed, `hsts: true`).

{body}
<!-- testssl:end -->
"""
doc = pathlib.Path("docs/security.md")
text = doc.read_text()
if "<!-- testssl:begin" in text:
    text = re.sub(r"<!-- testssl:begin.*?<!-- testssl:end -->\n", lambda _: section, text, flags=re.S)
else:
    text += "\n## TLS\n\n" + section
doc.write_text(text)
print(section)
if any(r["bad"] for r in runs):
    sys.exit("bench/testssl.sh: findings rated MEDIUM or worse (above)")
PY
