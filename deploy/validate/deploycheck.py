#!/usr/bin/env python3
"""Checks behind scripts/validate-deploy that no off-the-shelf tool makes.

    deploycheck.py dashboard-rules DASHBOARD OUT     every PromQL expression of a Grafana
                                                     dashboard as a rule file, for promtool
    deploycheck.py alert-tests RULES TESTS           every alert has a firing unit test
    deploycheck.py same-rules MANIFESTS RULES        as many ServiceMonitors and PrometheusRules
                                                     as the render asks for (none in the bare
                                                     default render), each PrometheusRule
                                                     carrying the rule file; for the default
                                                     render, chart-modes too
    deploycheck.py chart-modes CHART RULES           the chart rendered as helm install would:
                                                     on clusters with and without
                                                     prometheus-operator, refusing placeholders,
                                                     rolling pods only for what popgate reads
                                                     at start, with a termination grace period
                                                     that covers popgate's shutdown
    deploycheck.py exercise CONFIG_DIR BIN           start popgate, drive traffic that makes
                                                     every metric family appear, save /metrics
    deploycheck.py metric-names EXPOSITION SRC FILE...
                                                     popgate_* names, label names and label
                                                     values used by FILEs exist in the exposition
                                                     (values: as string literals under SRC)
    deploycheck.py configs MANIFESTS OUTDIR          write each rendered popgate.toml (and the
                                                     env the chart gives popgate) for check-config
    deploycheck.py compose-config COMPOSE OUTDIR     the same for docker-compose.yml's popgate
    deploycheck.py check-config TOML ENVFILE BIN     `popgate check-config` on a deployment's
                                                     config: its absolute paths moved under a
                                                     temporary root holding the files it names

Needs PyYAML (installed with yamllint).
"""

import json
import os
import poplib
import re
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request

import yaml

# Grafana's variables, replaced by what they stand for in a query.
GRAFANA_VARS = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1h",
    "${instance}": ".*",
    "$instance": ".*",
    "${tenant}": ".*",
    "$tenant": ".*",
}
# Labels Prometheus adds to every scraped series (namespace: prometheus-operator
# does, for each target of a ServiceMonitor; elsewhere it is empty, and a
# by (namespace) groups all as one).
TARGET_LABELS = {"job", "instance", "namespace"}
# The runbook_url of alert A in the rule file: RUNBOOKS#a (GitHub's anchor of
# the heading "## A" of docs/runbooks.md). The chart replaces RUNBOOKS by
# prometheusRule.runbookBaseUrl.
RUNBOOKS = "https://github.com/popgate/popgate/blob/main/docs/runbooks.md"
METRIC = re.compile(r"\bpopgate_[a-zA-Z0-9_]+")
CREDENTIALS = "/etc/popgate/credentials"  # where the chart mounts its credentials Secret


def fail(msg):
    print(f"deploycheck: {msg}", file=sys.stderr)
    sys.exit(1)


def grafana_exprs(dashboard):
    """(where, PromQL) for every target and every query variable."""
    out = []

    def walk_panels(panels):
        for p in panels:
            for t in p.get("targets", []):
                if t.get("expr"):
                    out.append((f'panel "{p.get("title")}" {t.get("refId")}', t["expr"]))
            walk_panels(p.get("panels", []))

    walk_panels(dashboard.get("panels", []))
    for v in dashboard.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        m = re.fullmatch(r"\s*label_values\((.*),\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*", q or "")
        if not m:
            fail(f"variable {v.get('name')}: only label_values(SELECTOR, LABEL) is understood: {q!r}")
        out.append((f'variable "{v["name"]}"', m.group(1)))
    return out


def substitute(expr):
    for k, v in GRAFANA_VARS.items():
        expr = expr.replace(k, v)
    if "$" in expr:
        fail(f"unknown Grafana variable in {expr!r}")
    return expr


def dashboard_rules(dashboard_path, out_path):
    with open(dashboard_path) as f:
        dashboard = json.load(f)
    exprs = grafana_exprs(dashboard)
    if not exprs:
        fail(f"{dashboard_path}: no expressions")
    rules = [
        {"record": f"dashboard:expr_{i}", "expr": substitute(e), "labels": {"where": where}}
        for i, (where, e) in enumerate(exprs)
    ]
    with open(out_path, "w") as f:
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, f, sort_keys=False)
    print(f"{len(rules)} expressions from {dashboard_path}")


def alert_tests(rules_path, tests_path):
    alerts = [
        r["alert"]
        for g in yaml.safe_load(open(rules_path))["groups"]
        for r in g["rules"]
        if "alert" in r
    ]
    firing, quiet = set(), set()
    for t in yaml.safe_load(open(tests_path))["tests"]:
        for a in t.get("alert_rule_test", []):
            (firing if a.get("exp_alerts") else quiet).add(a["alertname"])
    missing = [a for a in alerts if a not in firing]
    if missing:
        fail(f"{tests_path}: no test in which these alerts fire: {', '.join(missing)}")
    silent = [a for a in alerts if a not in quiet]
    if silent:
        fail(f"{tests_path}: no test in which these alerts stay quiet: {', '.join(silent)}")
    runbooks_path = os.path.join(HERE, "..", "..", "docs", "runbooks.md")
    headings = set(re.findall(r"^## (\S+)\s*$", open(runbooks_path).read(), re.M))
    for g in yaml.safe_load(open(rules_path))["groups"]:
        for r in g["rules"]:
            if "alert" not in r:
                continue
            url = (r.get("annotations") or {}).get("runbook_url")
            if url != f"{RUNBOOKS}#{r['alert'].lower()}":
                fail(f"{rules_path}: {r['alert']}: runbook_url {url!r}, want {RUNBOOKS}#{r['alert'].lower()}")
            if r["alert"] not in headings:
                fail(f"docs/runbooks.md: no heading \"## {r['alert']}\" for its runbook_url")
    print(f"{len(alerts)} alerts, each tested firing and quiet, each with its runbook in docs/runbooks.md")


def load_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLES = os.path.join(HERE, "..", "examples")
CHART = os.path.join(HERE, "..", "helm", "popgate")
# The chart's prometheus-operator objects: values key, kind.
MONITORING = (("serviceMonitor", "ServiceMonitor"), ("prometheusRule", "PrometheusRule"))
OPERATOR_APIS = ["monitoring.coreos.com/v1/ServiceMonitor", "monitoring.coreos.com/v1/PrometheusRule"]
# Every API server serves it, a plain helm template does not list it: the
# chart's sign that it is rendered for a live cluster (popgate.onCluster).
CLUSTER_API = "apiregistration.k8s.io/v1"


def expected_monitoring(manifests):
    """{kind: count} that scripts/validate-deploy's render MANIFESTS must hold.
    It renders without --api-versions, as for a cluster without
    prometheus-operator's CRDs: `auto` (the chart's default) makes nothing,
    so the default render holds none; an example that sets enabled: true
    holds one of each it enables. A render named default-operator is the
    default chart rendered with OPERATOR_APIS: one of each."""
    name = os.path.basename(manifests)[: -len(".yaml")]
    if name == "default-operator":
        return {kind: 1 for _, kind in MONITORING}
    values = {}
    if name != "default":
        path = os.path.join(EXAMPLES, f"{name}.yaml")
        if not os.path.exists(path):
            fail(f"{manifests}: neither the default render nor one of {EXAMPLES}/*.yaml")
        values = yaml.safe_load(open(path)) or {}
    want = {}
    for key, kind in MONITORING:
        enabled = (values.get(key) or {}).get("enabled", "auto")
        if enabled not in (True, False, "auto"):
            fail(f"{name}: {key}.enabled is {enabled!r}, want true, false or auto")
        want[kind] = 1 if enabled is True else 0
    return want


def check_monitoring(where, docs, want, rules):
    """Exactly want[kind] objects of each kind; every PrometheusRule is the rule file."""
    for kind, n in want.items():
        found = [d for d in docs if d.get("kind") == kind]
        if len(found) != n:
            fail(f"{where}: {len(found)} {kind} objects, want {n}")
        for d in found:
            if kind == "PrometheusRule" and d["spec"] != rules:
                fail(f"{where}: the PrometheusRule's spec differs from the rule file")


def same_rules(manifests, rules_path):
    rules = yaml.safe_load(open(rules_path))
    want = expected_monitoring(manifests)
    check_monitoring(manifests, load_docs(manifests), want, rules)
    print(f"{manifests}: " + ", ".join(f"{n} {k}" for k, n in want.items()) + f" (each carrying {rules_path})")
    if os.path.basename(manifests) == "default.yaml":
        chart_modes(CHART, rules_path)


def helm_binary():
    """POPGATE_HELM, else the helm scripts/validate-deploy installs next to
    the venv this runs in ($POPGATE_DEPLOY_TOOLS/bin/helm)."""
    helm = os.environ.get("POPGATE_HELM") or os.path.join(os.path.dirname(sys.prefix), "bin", "helm")
    if not os.access(helm, os.X_OK):
        fail(f"no helm at {helm} (set POPGATE_HELM)")
    return helm


def helm_template(chart, *args):
    """(returncode, documents or [], stderr) of `helm template` of the chart."""
    r = subprocess.run([helm_binary(), "template", "popgate", chart, "--namespace", "mail", *args],
                       capture_output=True, text=True)
    docs = [d for d in yaml.safe_load_all(r.stdout) if d] if r.returncode == 0 else []
    return r.returncode, docs, r.stderr.strip()


def render(chart, *args):
    code, docs, err = helm_template(chart, *args)
    if code != 0:
        fail(f"helm template {' '.join(args)}: {err}")
    return docs


def refused(chart, message, *args):
    """The render must fail, naming `message`."""
    code, _, err = helm_template(chart, *args)
    if code == 0:
        fail(f"helm template {' '.join(args)}: rendered, want a refusal naming {message!r}")
    if message not in err:
        fail(f"helm template {' '.join(args)}: refused without naming {message!r}: {err}")


def of_kind(docs, kind):
    found = [d for d in docs if d.get("kind") == kind]
    if len(found) != 1:
        fail(f"{len(found)} {kind} objects, want 1")
    return found[0]


def pod_template(docs):
    return of_kind(docs, "Deployment")["spec"]["template"]


def source_seconds(path, pattern, what):
    m = re.search(pattern, open(path).read(), re.S)
    if not m:
        fail(f"{path}: cannot find {what}; update deploycheck.py's chart-modes to the code")
    return int(m.group(1))


def chart_modes(chart, rules_path):
    rules = yaml.safe_load(open(rules_path))
    ops = [a for api in OPERATOR_APIS for a in ("--api-versions", api)]
    on = {"ServiceMonitor": 1, "PrometheusRule": 1}
    off = {"ServiceMonitor": 0, "PrometheusRule": 0}

    # prometheus-operator's objects: auto follows the cluster's CRDs, true
    # and false force.
    check_monitoring("with the CRDs", render(chart, *ops), on, rules)
    check_monitoring("without the CRDs", render(chart), off, rules)
    for kind, api in zip(("ServiceMonitor", "PrometheusRule"), OPERATOR_APIS):
        check_monitoring(f"with only {api}", render(chart, "--api-versions", api),
                         {k: int(k == kind) for k in on}, rules)
    check_monitoring("with the CRDs, disabled", render(
        chart, *ops, "--set", "serviceMonitor.enabled=false", "--set", "prometheusRule.enabled=false"), off, rules)
    check_monitoring("without the CRDs, forced", render(
        chart, "--set", "serviceMonitor.enabled=true", "--set", "prometheusRule.enabled=true"), on, rules)
    print("ServiceMonitor and PrometheusRule: only with prometheus-operator's CRDs (auto), or forced")

    # prometheusRule.runbookBaseUrl: the rule file with only the base of its
    # runbook_url annotations replaced.
    base = "https://wiki.example.test/ops/popgate-runbooks"
    moved = yaml.safe_load(open(rules_path).read().replace(f"{RUNBOOKS}#", f"{base}#"))
    if moved == rules:
        fail(f"{rules_path}: no runbook_url under {RUNBOOKS}")
    check_monitoring("with prometheusRule.runbookBaseUrl", render(
        chart, *ops, "--set", f"prometheusRule.runbookBaseUrl={base}"), on, moved)
    print("prometheusRule.runbookBaseUrl: the rule file with each runbook_url under that base")

    # A live install refuses the placeholders of values.yaml; offline
    # renders (helm lint, helm template) keep them.
    cluster = ["--api-versions", CLUSTER_API]
    image = ["--set", "image.repository=registry.test/popgate"]
    redis = ["--set-string", "credentials.files.redis-url=redis://:pw@redis.redis.svc:6379/0"]
    refused(chart, "image.repository", *cluster)
    refused(chart, "credentials.files.redis-url", *cluster, *image)
    refused(chart, "credentials.files.postgres-url", *cluster, *image, *redis,
            "--set-string", "credentials.files.postgres-url=postgres://u:REPLACE_ME@db/mail")
    # Secrets as environment variables are gone, offline renders too.
    refused(chart, "credentials.env is gone", "--set-string", "credentials.env.POPGATE_LOCKS__URL=redis://x")
    refused(chart, "mail.storageClassName", "--set", "mail.create=true")
    refused(chart, "networkPolicy.egress.redis has no `to`", "--set", "networkPolicy.egress.redis.to=null")
    refused(chart, "networkPolicy.egress.redis has no `ports`", "--set", "networkPolicy.egress.redis.ports=null")
    docs = render(chart, *cluster, *image, *redis)
    check_monitoring("a live install without the CRDs", docs, off, rules)
    render(chart, *cluster, *image, "--set", "credentials.existingSecret=popgate-credentials")
    print("a live install refuses the image and REPLACE_ME placeholders; helm template keeps them")

    # Pods roll for what popgate reads at start (config, environment), not
    # for what it re-reads (passwd-files, TLS).
    base = pod_template(render(chart))
    for what, args, rolls in (
        ("a passwd-file", ["--set-string", "passwd.files.acme\\.passwd=bob@acme.example:{PLAIN}x"], False),
        ("a tenant's own passwd Secret", ["--set", "passwd.tenantSecrets.acme=acme-passwd"], True),
        ("the TLS Secret", ["--set", "tls.create=true", "--set", "tls.certificate=c", "--set", "tls.privateKey=k"],
         False),
        ("the config", ["--set-string", "config=[server]\nhostname = \"x\""], True),
        ("the credentials", ["--set-string", "credentials.files.postgres-url=x"], True),
    ):
        changed = pod_template(render(chart, *args)) != base
        if changed != rolls:
            fail(f"changing {what} {'does not roll' if rolls else 'rolls'} the pods")
    print("pods roll for the config and the credentials, not for passwd-files or TLS certificates")
    # The credentials reach popgate as read-only files, never through the
    # environment.
    for args in ([], ["--set", "credentials.existingSecret=popgate-credentials"], ["--set", "migrations.enabled=true"]):
        spec = pod_template(render(chart, *args))["spec"]
        volume = [v for v in spec["volumes"] if v["name"] == "credentials"]
        if not volume or volume[0]["secret"].get("defaultMode") != 0o440:
            fail(f"{args}: no credentials volume with mode 0440: {volume}")
        for c in spec["containers"] + spec.get("initContainers", []):
            if c.get("envFrom") or any("valueFrom" in e for e in c.get("env", [])):
                fail(f"{args}: container {c['name']} takes secrets from the environment")
            mounts = [m for m in c.get("volumeMounts", []) if m["name"] == "credentials"]
            if not mounts or mounts[0]["mountPath"] != CREDENTIALS or not mounts[0].get("readOnly"):
                fail(f"{args}: container {c['name']} does not mount the credentials read-only at {CREDENTIALS}")
    print(f"credentials: a read-only Secret volume at {CREDENTIALS} (0440), no secret in any environment")
    tenant = pod_template(render(chart, "--set", "passwd.tenantSecrets.acme=acme-passwd",
                                 "--set", "passwd.tenantSecrets.globex=globex-passwd"))
    volume = [v for v in tenant["spec"]["volumes"] if v["name"] == "passwd"][0]
    got = sorted((s["secret"]["name"], s["secret"]["items"][0]["path"]) for s in volume["projected"]["sources"])
    if got != [("acme-passwd", "acme.passwd"), ("globex-passwd", "globex.passwd")]:
        fail(f"passwd.tenantSecrets: the passwd volume holds {got}")
    print("passwd.tenantSecrets: one Secret per tenant, one projected directory")

    # terminationGracePeriodSeconds covers popgate's shutdown as the code
    # has it: the preStop sleep, the grace, the wait for the last sessions
    # to close (which covers each session's bounded goodbye), a margin.
    src = os.path.join(HERE, "..", "..", "crates", "popgate-server", "src")
    close_wait = source_seconds(
        os.path.join(src, "listener.rs"),
        r"force_tx\.send\(true\);\s*let _ = tokio::time::timeout\(Duration::from_secs\((\d+)\)",
        "the wait for sessions to close after the grace")
    flush = source_seconds(os.path.join(src, "conn.rs"),
                           r"async fn close.*?min\(Duration::from_secs\((\d+)\)\)", "Conn::close's flush bound")
    shut = source_seconds(os.path.join(src, "conn.rs"),
                          r"async fn close.*?timeout\(Duration::from_secs\((\d+)\), self\.io\.shutdown",
                          "Conn::close's shutdown bound")
    if flush + shut > close_wait:
        fail(f"Conn::close may take {flush + shut} s, more than the {close_wait} s Server::run waits")
    for grace, prestop in ((30, 10), (120, 5)):
        spec = pod_template(render(chart, "--set", f"shutdownGraceSeconds={grace}",
                                   "--set", f"preStopSleepSeconds={prestop}"))["spec"]
        period = spec["terminationGracePeriodSeconds"]
        need = prestop + grace + close_wait
        if not need < period <= need + 10:
            fail(f"terminationGracePeriodSeconds {period} for preStop {prestop} s + grace {grace} s "
                 f"+ {close_wait} s to close: want a margin of 1 to 10 s")
        env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
        if env.get("POPGATE_SERVER__SHUTDOWN_GRACE") != f"{grace}s":
            fail(f"shutdownGraceSeconds={grace} but POPGATE_SERVER__SHUTDOWN_GRACE={env.get('POPGATE_SERVER__SHUTDOWN_GRACE')}")
    print(f"terminationGracePeriodSeconds = preStop + grace + {close_wait} s (listener.rs; "
          f"Conn::close {flush} s + {shut} s) + margin")


def configs(manifests, outdir):
    """Writes NAME.toml, NAME.env (KEY=VALUE lines) and NAME.files.json (the
    files popgate's Secret volumes hold: path -> content) per ConfigMap with
    popgate.toml."""
    docs = load_docs(manifests)
    env = {}
    secrets = {d["metadata"]["name"]: d.get("stringData", {}) for d in docs
               if d.get("kind") == "Secret" and d.get("type", "Opaque") == "Opaque"}
    files = {}
    for d in docs:
        if d.get("kind") == "Deployment":
            spec = d["spec"]["template"]["spec"]
            volumes = {v["name"]: v for v in spec.get("volumes", [])}
            for c in spec["containers"]:
                if c["name"] != "popgate":
                    continue
                env.update({e["name"]: e["value"] for e in c.get("env", []) if "value" in e})
                for m in c.get("volumeMounts", []):
                    secret = volumes.get(m["name"], {}).get("secret", {}).get("secretName")
                    if secret in secrets:
                        files.update({f"{m['mountPath']}/{k}": v for k, v in secrets[secret].items()})
                    elif secret and m["mountPath"] == CREDENTIALS:
                        # credentials.existingSecret: made before the install,
                        # so the render does not show it. docs/kubernetes.md
                        # has it hold redis-url; stand in for that (an
                        # address that resolves nowhere: check-config dials
                        # nothing).
                        files[f"{CREDENTIALS}/redis-url"] = "redis://:stand-in@redis.invalid:6379/0\n"
    n = 0
    for d in docs:
        if d.get("kind") == "ConfigMap" and "popgate.toml" in d.get("data", {}):
            name = d["metadata"]["name"]
            with open(os.path.join(outdir, f"{name}.toml"), "w") as f:
                f.write(d["data"]["popgate.toml"])
            with open(os.path.join(outdir, f"{name}.env"), "w") as f:
                for k, v in sorted(env.items()):
                    f.write(f"{k}={v}\n")
            with open(os.path.join(outdir, f"{name}.files.json"), "w") as f:
                json.dump(files, f)
            n += 1
    if n == 0:
        fail(f"{manifests}: no ConfigMap with popgate.toml")


def compose_config(compose_path, outdir):
    doc = yaml.safe_load(open(compose_path))
    svc = doc["services"]["popgate"]
    env = svc.get("environment", {})
    if isinstance(env, list):
        env = dict(e.split("=", 1) for e in env)
    toml_src = None
    for v in svc.get("volumes", []):
        src, dst = v.split(":")[:2]
        if dst == "/etc/popgate/popgate.toml":
            toml_src = os.path.join(os.path.dirname(compose_path), src)
    if not toml_src:
        fail(f"{compose_path}: popgate mounts no /etc/popgate/popgate.toml")
    with open(toml_src) as f, open(os.path.join(outdir, "compose.toml"), "w") as out:
        out.write(f.read())
    with open(os.path.join(outdir, "compose.env"), "w") as f:
        for k, v in sorted(env.items()):
            f.write(f"{k}={v}\n")


def check_config(toml_path, env_path, binary):
    import tomllib

    root = tempfile.mkdtemp(prefix="popgate-config-")
    text = open(toml_path).read()
    moved = re.sub(r'"(/[^"]*)"', lambda m: f'"{root}{m.group(1)}"', text)
    config = tomllib.loads(moved)
    cert = key = None

    def make_pair(c, k):
        nonlocal cert, key
        for p in (c, k):
            os.makedirs(os.path.dirname(p), exist_ok=True)
        if cert is None:
            cert, key = os.path.join(root, "pair.crt"), os.path.join(root, "pair.key")
            subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                 "-subj", "/CN=localhost", "-keyout", key, "-out", cert],
                check=True, capture_output=True)
        with open(cert) as f, open(c, "w") as out:
            out.write(f.read())
        with open(key) as f, open(k, "w") as out:
            out.write(f.read())

    # The files of the Secret volumes (configs()), where the moved config
    # looks for them.
    files_path = toml_path[: -len(".toml")] + ".files.json"
    if os.path.exists(files_path):
        for path, content in json.load(open(files_path)).items():
            moved_path = root + path
            os.makedirs(os.path.dirname(moved_path), exist_ok=True)
            with open(moved_path, "w") as f:
                f.write(content)
    pairs = [config.get("tls")] + [t.get("tls") for t in config.get("tenants", [])]
    for p in pairs:
        if p:
            make_pair(p["certificate"], p["private_key"])
    for t in config.get("tenants", []):
        auth, store = t.get("auth", {}), t.get("store", {})
        if auth.get("kind") == "passwd-file":
            os.makedirs(os.path.dirname(auth["path"]), exist_ok=True)
            open(auth["path"], "a").close()
        if store.get("kind") == "maildir":
            fixed = store["path"].split("%")[0]
            os.makedirs(fixed if fixed.endswith("/") else os.path.dirname(fixed), exist_ok=True)
    checked = os.path.join(root, "popgate.toml")
    with open(checked, "w") as f:
        f.write(moved)
    env = {k: v for k, v in os.environ.items() if not k.startswith("POPGATE_")}
    for line in open(env_path):
        if "=" in line:
            k, v = line.rstrip("\n").split("=", 1)
            env[k] = v
    r = subprocess.run([binary, "check-config", "--config", checked], env=env,
                       capture_output=True, text=True)
    if r.returncode != 0:
        fail(f"{toml_path}: popgate check-config: {r.stderr.strip() or r.stdout.strip()}")
    print(f"{toml_path}: {r.stdout.strip()}")


# --- the real exposition -------------------------------------------------


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, deadline):
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                return r.read().decode()
        except OSError:
            time.sleep(0.1)
    fail(f"{url} did not answer")


def read_until_closed(sock, limit=2.0):
    sock.settimeout(limit)
    try:
        while sock.recv(4096):
            pass
    except OSError:
        pass


def exercise(workdir, binary):
    """Starts popgate on loopback ports with a plain, an implicit-TLS and two
    PROXY listeners, drives sessions that touch every metric family (logins
    good and bad, RETR, DELE, a message gone under a session, QUIT, TLS good
    and bad, PROXY headers untrusted and malformed), prints /metrics."""
    os.makedirs(os.path.join(workdir, "mail"), exist_ok=True)
    cert, key = os.path.join(workdir, "tls.crt"), os.path.join(workdir, "tls.key")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-keyout", key, "-out", cert],
        check=True, capture_output=True)
    with open(os.path.join(workdir, "passwd"), "w") as f:
        f.write("bob@localhost:{PLAIN}secret\n")
    plain, tls, untrusted, proxied, metrics = (free_port() for _ in range(5))
    config = os.path.join(workdir, "popgate.toml")
    with open(config, "w") as f:
        f.write(f"""
[server]
hostname = "localhost"
shutdown_grace = "1s"
auth_failure_delay = "100ms"
auth_penalty = "100ms"
auth_penalty_max = "200ms"

[[listeners]]
address = "127.0.0.1:{plain}"
tls = "none"
plaintext_auth = true
default_tenant = "local"

[[listeners]]
address = "127.0.0.1:{tls}"
tls = "implicit"
default_tenant = "local"

[[listeners]]
address = "127.0.0.1:{untrusted}"
tls = "none"
plaintext_auth = true
proxy_protocol = true
trusted_proxies = ["192.0.2.0/24"]

[[listeners]]
address = "127.0.0.1:{proxied}"
tls = "none"
plaintext_auth = true
proxy_protocol = true
trusted_proxies = ["127.0.0.1/32"]

[tls]
certificate = "{cert}"
private_key = "{key}"

[locks]
backend = "memory"

[metrics]
address = "127.0.0.1:{metrics}"

[[tenants]]
name = "local"
domains = ["localhost"]
auth = {{ kind = "passwd-file", path = "{workdir}/passwd" }}
store = {{ kind = "maildir", path = "{workdir}/mail/%d/%n/Maildir" }}
max_sessions = 1000
""")
    env = {k: v for k, v in os.environ.items() if not k.startswith("POPGATE_")}
    for i in (1, 2):
        subprocess.run([binary, "deliver", "--config", config, "--user", "bob@localhost"],
                       input=f"Subject: test {i}\r\n\r\nbody {i}\r\n".encode(),
                       check=True, env=env, capture_output=True)
    log = open(os.path.join(workdir, "popgate.log"), "w")
    proc = subprocess.Popen([binary, "serve", "--config", config], env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{metrics}/readyz", time.time() + 20)
        # A failed login, then a session that reads, deletes, loses a message
        # under its feet, and commits.
        c = poplib.POP3("127.0.0.1", plain, timeout=10)
        c.user("bob")
        try:
            c.pass_("wrong")
        except poplib.error_proto:
            pass
        c.user("bob")
        c.pass_("secret")
        c.stat()
        c.uidl()
        c.retr(1)
        c.dele(1)
        maildir = os.path.join(workdir, "mail", "localhost", "bob", "Maildir")
        for sub in ("cur", "new"):
            for name in sorted(os.listdir(os.path.join(maildir, sub))):
                if "body 2" in open(os.path.join(maildir, sub, name), errors="replace").read():
                    os.remove(os.path.join(maildir, sub, name))
        try:
            c.retr(2)
        except poplib.error_proto:
            pass
        try:
            c._shortcmd("BOGUS")  # an unknown command: -ERR
        except poplib.error_proto:
            pass
        c.quit()
        # TLS: one good handshake, one that is not TLS at all.
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        s = poplib.POP3_SSL("127.0.0.1", tls, context=ctx, timeout=10)
        s.quit()
        with socket.create_connection(("127.0.0.1", tls), timeout=5) as raw:
            raw.sendall(b"GET / HTTP/1.0\r\n\r\n")
            read_until_closed(raw)
        # PROXY: a peer that is not trusted, and a malformed header.
        with socket.create_connection(("127.0.0.1", untrusted), timeout=5) as raw:
            raw.sendall(b"PROXY TCP4 198.51.100.7 127.0.0.1 40000 110\r\n")
            read_until_closed(raw)
        with socket.create_connection(("127.0.0.1", proxied), timeout=5) as raw:
            raw.sendall(b"HELLO there\r\n")
            read_until_closed(raw)
        time.sleep(0.3)
        text = wait_http(f"http://127.0.0.1:{metrics}/metrics", time.time() + 10)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    sys.stdout.write(text)


def exposition(path):
    """{series name: set of label names} from the text format."""
    series = {}
    line_re = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s")
    for line in open(path):
        if not line.strip() or line.startswith("#"):
            continue
        m = line_re.match(line)
        if not m:
            fail(f"{path}: cannot read {line!r}")
        labels = set(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="', m.group(3) or ""))
        series.setdefault(m.group(1), set()).update(labels)
    return series


def exprs_of(path):
    """(where, PromQL) of a rule file, a dashboard, a test file's promql tests."""
    if path.endswith(".json"):
        return [(w, substitute(e)) for w, e in grafana_exprs(json.load(open(path)))]
    doc = yaml.safe_load(open(path))
    return [
        (f'{r.get("alert") or r.get("record")}', r["expr"])
        for g in doc["groups"]
        for r in g["rules"]
    ]


def balanced(text, start):
    """The text inside the parenthesis that opens at text[start]."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            depth -= 1
            if depth == 0:
                return text[start + 1:i]
    return text[start + 1:]


def metric_names(expo_path, src_dir, files):
    series = exposition(expo_path)
    literals = set()
    for dirpath, _, names in os.walk(src_dir):
        for n in names:
            if n.endswith(".rs"):
                literals.update(re.findall(r'"([a-z_]+)"', open(os.path.join(dirpath, n)).read()))
    problems = []
    count = 0
    for path in files:
        for where, expr in exprs_of(path):
            count += 1
            # Names: every popgate_* must be a series of the exposition.
            for name in set(METRIC.findall(expr)):
                if name not in series:
                    problems.append(f"{path}: {where}: unknown metric {name}")
            # Selectors: label names on the metric, values the code can produce.
            for m in re.finditer(r"\b(popgate_[a-zA-Z0-9_]+)\{([^}]*)\}", expr):
                name, body = m.group(1), m.group(2)
                for lm in re.finditer(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"', body):
                    label, value = lm.group(1), lm.group(3)
                    if label in TARGET_LABELS:
                        continue
                    if name in series and label not in series[name]:
                        problems.append(f"{path}: {where}: {name} has no label {label}")
                    for v in value.split("|"):
                        if v in (".*", ".+", "") or v.startswith("$"):
                            continue
                        if not re.fullmatch(r"[a-z_]+", v) or v not in literals:
                            problems.append(
                                f"{path}: {where}: {label}={v!r} is no value popgate's code names")
            # Grouping: every label of by (...) on every metric aggregated.
            for m in re.finditer(r"\bby\s*\(([^)]*)\)\s*\(", expr):
                labels = {x.strip() for x in m.group(1).split(",") if x.strip()}
                inner = balanced(expr, m.end() - 1)
                for name in set(METRIC.findall(inner)):
                    have = series.get(name, set()) | TARGET_LABELS
                    for label in sorted(labels - have):
                        problems.append(f"{path}: {where}: by ({label}) but {name} has no such label")
    if problems:
        fail("\n  " + "\n  ".join(sorted(set(problems))))
    used = sorted({n for p in files for _, e in exprs_of(p) for n in METRIC.findall(e)})
    print(f"{count} expressions, {len(used)} popgate_* series, all in the exposition of the real binary")


def main(argv):
    if len(argv) < 2:
        fail(__doc__)
    cmd, args = argv[1], argv[2:]
    if cmd == "dashboard-rules":
        dashboard_rules(*args)
    elif cmd == "alert-tests":
        alert_tests(*args)
    elif cmd == "same-rules":
        same_rules(*args)
    elif cmd == "chart-modes":
        chart_modes(*args)
    elif cmd == "configs":
        configs(*args)
    elif cmd == "compose-config":
        compose_config(*args)
    elif cmd == "check-config":
        check_config(*args)
    elif cmd == "exercise":
        exercise(*args)
    elif cmd == "metric-names":
        metric_names(args[0], args[1], args[2:])
    else:
        fail(f"unknown command {cmd}")


if __name__ == "__main__":
    main(sys.argv)
