#!/usr/bin/env bash
# Static security check of the Bicep in infra/ with checkov, offline.
#
#   bash infra/check.sh            # from anywhere inside the repository
#
# Creates .venv-infra/ at the repository root (once; later runs reuse it when the pinned
# version is already installed). checkov lives in its own virtualenv because its dependency
# pins clash with the app's.
#
# Fails when checkov reports a failed check, when it could not parse a file (checkov itself only
# counts such files and still exits 0), or when any .bicep file under infra/ was not analysed.
# Unavoidable findings are suppressed inline in the Bicep, one per line:
#   //checkov:skip=CKV_AZURE_NN:reason
# Parser limits of pycep (checkov's Bicep parser) to keep in mind: at most nine comment lines in a
# row at the top of an object and four between two properties; no nullable types (`string?`);
# declare child resources at top level with `parent:`.
set -euo pipefail

CHECKOV_VERSION="3.3.30"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo_root/.venv-infra"
infra_dir="$repo_root/infra"

pick_python() {
  for candidate in python3.11 python3.12 python3.13 python3.10 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then
      echo "$candidate"
      return 0
    fi
  done
  echo "infra/check.sh: no python3 found" >&2
  return 1
}

installed_version() {
  "$venv/bin/python" - <<'PY' 2>/dev/null || true
from importlib.metadata import version
print(version("checkov"))
PY
}

if [[ ! -x "$venv/bin/python" ]]; then
  "$(pick_python)" -m venv "$venv"
fi
if [[ "$(installed_version)" != "$CHECKOV_VERSION" ]]; then
  echo "infra/check.sh: installing checkov $CHECKOV_VERSION into .venv-infra/" >&2
  if ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
      "checkov==$CHECKOV_VERSION" >"$venv/pip-install.log" 2>&1; then
    cat "$venv/pip-install.log" >&2
    exit 1
  fi
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# --skip-download: no platform API calls, no policy downloads (offline, reproducible).
# Exit status is decided below from the JSON, not from checkov's own code.
set +e
"$venv/bin/checkov" \
  --directory "$infra_dir" \
  --framework bicep \
  --skip-download \
  --output json \
  --compact \
  >"$work/report.json" 2>"$work/checkov.log"
checkov_rc=$?
set -e

# The same parser checkov uses, to prove that every file was read.
"$venv/bin/python" - "$work/report.json" "$infra_dir" "$checkov_rc" "$work/checkov.log" <<'PY'
import json
import sys
from pathlib import Path

from pycep import BicepParser

report_path, infra_dir, checkov_rc, log_path = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
problems = []

try:
    report = json.loads(Path(report_path).read_text() or "null")
except json.JSONDecodeError as exc:
    report = None
    problems.append(f"checkov output is not JSON ({exc})")
if isinstance(report, list):  # several frameworks: one report each
    report = next((r for r in report if r.get("check_type") == "bicep"), None)
if not isinstance(report, dict) or "summary" not in report:
    problems.append(f"checkov produced no bicep report (exit code {checkov_rc})")
    report = {"summary": {}, "results": {}}

summary = report["summary"]
results = report.get("results", {})

for check in results.get("failed_checks", []):
    problems.append(
        f"FAILED {check['check_id']} {check['check_name']}: {check['file_path']} {check['resource']}"
    )
for path in results.get("parsing_errors", []):
    problems.append(f"PARSE ERROR (checkov skipped this file): {path}")
if summary.get("failed", 0) and not results.get("failed_checks"):
    problems.append(f"summary.failed = {summary['failed']}")
if summary.get("parsing_errors", 0) and not results.get("parsing_errors"):
    problems.append(f"summary.parsing_errors = {summary['parsing_errors']}")

# Every .bicep file must parse, and checkov must have seen every resource and module in them.
parser = BicepParser()
files = sorted(infra_dir.rglob("*.bicep"))
if not files:
    problems.append(f"no .bicep files under {infra_dir}")
expected_resources = 0
for path in files:
    try:
        parsed = parser.parse(text=path.read_text(encoding="utf-8"))
    except Exception as exc:  # any parser failure means checkov skipped the file
        problems.append(f"PARSE ERROR {path.relative_to(infra_dir.parent)}: {type(exc).__name__}: {str(exc).splitlines()[0]}")
        continue
    expected_resources += len(parsed.get("resources") or {}) + len(parsed.get("modules") or {})
if summary.get("resource_count", 0) < expected_resources:
    problems.append(
        f"checkov analysed {summary.get('resource_count', 0)} resources, the Bicep declares {expected_resources}"
    )

skipped = results.get("skipped_checks", [])
print(
    f"checkov {summary.get('checkov_version', '?')} on {len(files)} Bicep files: "
    f"{summary.get('passed', 0)} passed, {summary.get('failed', 0)} failed, "
    f"{len(skipped)} suppressed, {summary.get('parsing_errors', 0)} parse errors, "
    f"{summary.get('resource_count', 0)} resources"
)
for check in skipped:
    reason = (check.get("check_result") or {}).get("suppress_comment", "").strip()
    print(f"  suppressed {check['check_id']} on {check['resource']}: {reason}")
    if not reason or reason == "No comment provided":
        problems.append(f"suppression of {check['check_id']} on {check['resource']} gives no reason")
if problems:
    print("infra check FAILED:", file=sys.stderr)
    for problem in problems:
        print(f"  {problem}", file=sys.stderr)
    log = Path(log_path).read_text(errors="replace").strip()
    if log:
        print("checkov log (last lines):", file=sys.stderr)
        print("\n".join(log.splitlines()[-20:]), file=sys.stderr)
    sys.exit(1)
PY
