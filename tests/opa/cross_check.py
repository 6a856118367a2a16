#!/usr/bin/env python3
"""Cross-check the policy bundle under real OPA against regorus (what the gateway embeds).

For every case in policies/cases/*.json (a list of {name, input, want}) this evaluates
data.portcullis.authz.decision twice:

  * with real OPA (the Go engine, from PyPI opa-golib-python-bindings), loaded with the
    bundle's non-test modules and its data.json merged with the catalog-derived
    portcullis.catalog = {"tools": {name: {kind, risk, owner}}}, exactly as
    portcullis-core's Authorizer builds it;
  * with regorus, by running `portcullis policy eval --json --input <file>`;

and requires the two decision documents to be identical, the exit status to match the
verdict (0 allowed, 3 denied), and both to meet the case's `want` (allow, require_approval,
rule_ids, and reasons, visible_tools, cacheable and placement when given; `"placement": null`
wants none). It then runs the Rego unit tests
(`test_*` rules of the `*_test.rego` modules) under real OPA and requires every one to pass
there, and to be the same tests, with the same outcome, that `portcullis policy test`
(regorus) reports.

Divergences found and understood are recorded in tests/opa/known_divergences.json, each with
the exact document each engine returns. They are not counted as passed: each must reproduce
exactly as recorded (printed as KNOWN) or it fails, so a fix on either side, or a new way of
diverging, is noticed and the case moves into policies/cases.

Prints one PASS/FAIL line per case and per unit test, then `N passed, M failed`. Exits 1 on
any failure, 2 when it cannot run at all (OPA bindings missing, no portcullis binary, bad
case files): it never skips.

Run from anywhere: .venv/bin/python tests/opa/cross_check.py (see `make check-opa`).
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DECISION = "portcullis.authz.decision"  # data.portcullis.authz.decision, core's ENTRYPOINT
EXIT_ALLOWED, EXIT_DENIED = 0, 3
# What portcullis-core's Authorizer::decide returns when the decision is undefined (fail closed).
UNDEFINED_DECISION = {
    "allow": False,
    "require_approval": False,
    "reasons": ["policy produced no decision for this request"],
    "rule_ids": ["portcullis.undefined"],
}
# Test rules, found as portcullis-core's run_tests finds them: a line starting with test_.
TEST_RULE = re.compile(r"^(test_[A-Za-z0-9_]*)")
PACKAGE = re.compile(r"^\s*package\s+([A-Za-z0-9_.]+)", re.MULTILINE)


class SetupError(Exception):
    """The cross-check cannot run at all."""


def main() -> int:
    args = parse_args()
    try:
        opa = import_opa()
        catalog_data = catalog_policy_data(args.catalog)
        modules, tests = policy_modules(args.policies)
        data = bundle_data(args.policies)
        cases = load_cases(args.cases)
        known = load_known_divergences(args.known_divergences, {c["name"] for _, c in cases})
        if not args.portcullis.is_file() or not os.access(args.portcullis, os.X_OK):
            raise SetupError(f"{args.portcullis} is not an executable; build it first (make runner)")
    except SetupError as e:
        print(f"cross_check: error: {e}", file=sys.stderr)
        print("0 passed, 1 failed")
        return 2

    print(f"OPA: opa-golib-python-bindings {package_version()}; regorus: {args.portcullis}")
    results = []
    engine = new_engine(opa, modules, data, catalog_data)
    with tempfile.TemporaryDirectory(prefix="portcullis-cross-check-") as tmp:
        for i, (source, case) in enumerate(cases):
            results.append(check_case(opa, engine, args, Path(tmp) / f"case-{i}.json", source, case))
        reproduced = 0
        for i, kd in enumerate(known):
            ok = check_known_divergence(opa, engine, args, Path(tmp) / f"known-{i}.json", kd)
            if ok:
                reproduced += 1
            else:
                results.append(False)
    engine.close()

    test_engine = new_engine(opa, modules + tests, data, catalog_data)
    results.extend(check_unit_tests(opa, test_engine, args, tests))
    test_engine.close()

    passed = sum(1 for ok in results if ok)
    failed = len(results) - passed
    if known:
        print(f"{reproduced} of {len(known)} known divergences reproduced as recorded in {args.known_divergences.name}")
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 and passed > 0 else 1


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--portcullis", type=Path, default=ROOT / "target/release/portcullis")
    p.add_argument("--policies", type=Path, default=ROOT / "policies")
    p.add_argument("--catalog", type=Path, default=ROOT / "catalog/example.yaml")
    p.add_argument("--cases", type=Path, default=ROOT / "policies/cases")
    p.add_argument("--known-divergences", type=Path, default=ROOT / "tests/opa/known_divergences.json")
    return p.parse_args()


def import_opa():
    try:
        import opa_bindings
    except Exception as e:  # ImportError, or the shared library failing to load
        raise SetupError(
            f"real OPA is unavailable ({e!r}); run scripts/setup.sh to install "
            "opa-golib-python-bindings into .venv, and run this with .venv/bin/python"
        ) from e
    return opa_bindings


def package_version() -> str:
    from importlib.metadata import version

    return version("opa-golib-python-bindings")


def new_engine(opa, modules, data, catalog_data):
    engine = opa.OpaEngine()
    try:
        for name, source in modules:
            engine.add_policy(name, source)
        if data is not None:
            engine.add_data(data)
        engine.add_data({"portcullis": {"catalog": catalog_data}})
    except opa.OpaError as e:
        engine.close()
        raise SetupError(f"OPA does not load the bundle: {e}") from e
    return engine


# --- the bundle, as runner/src/bundle.rs and portcullis-core load it --------------------------


def catalog_policy_data(path: Path) -> dict:
    """Catalog::policy_data(): {"tools": {name: {"kind", "risk", "owner"}}}."""
    try:
        import yaml
    except ImportError as e:
        raise SetupError("PyYAML is not installed; run scripts/setup.sh") from e
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise SetupError(f"cannot read catalog {path}: {e}") from e
    tools = {}
    for tool in (doc or {}).get("tools") or []:
        name = tool.get("name")
        entry = {k: tool.get(k) for k in ("kind", "risk", "owner")}
        if not isinstance(name, str) or not all(isinstance(v, str) for v in entry.values()):
            raise SetupError(f"catalog {path}: tool {name!r} lacks a string name, kind, risk or owner")
        if name in tools:
            raise SetupError(f"catalog {path}: duplicate tool {name}")
        tools[name] = entry
    if not tools:
        raise SetupError(f"catalog {path} has no tools")
    return {"tools": tools}


def policy_modules(policies: Path):
    """(modules, test modules) as (file name, source), sorted like bundle::load_policy."""
    files = sorted(p for p in policies.iterdir() if p.is_file() and p.name.endswith(".rego"))
    modules = [(p.name, p.read_text()) for p in files if not p.name.endswith("_test.rego")]
    tests = [(p.name, p.read_text()) for p in files if p.name.endswith("_test.rego")]
    if not modules:
        raise SetupError(f"no .rego modules in {policies}")
    return modules, tests


def bundle_data(policies: Path):
    path = policies / "data.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(), object_pairs_hook=no_duplicate_keys)
    except ValueError as e:
        raise SetupError(f"cannot parse {path}: {e}") from e


def no_duplicate_keys(pairs):
    obj = {}
    for k, v in pairs:
        if k in obj:
            raise ValueError(f"duplicate key {k!r}")
        obj[k] = v
    return obj


def load_json_array(path: Path, what: str):
    """A JSON array from `path`, refusing duplicate keys anywhere in it."""
    try:
        doc = json.loads(path.read_text(), object_pairs_hook=no_duplicate_keys)
    except ValueError as e:
        raise SetupError(f"cannot parse {path}: {e}") from e
    if not isinstance(doc, list):
        raise SetupError(f"{path}: want {what}")
    return doc


def load_cases(cases_dir: Path):
    files = sorted(cases_dir.glob("*.json"))
    if not files:
        raise SetupError(f"no case files (*.json) in {cases_dir}")
    cases, names = [], set()
    for f in files:
        doc = load_json_array(f, "a JSON array of cases")
        for case in doc:
            problem = case_problem(case)
            if problem:
                raise SetupError(f"{f}: case {case.get('name') if isinstance(case, dict) else case!r}: {problem}")
            if case["name"] in names:
                raise SetupError(f"{f}: duplicate case name {case['name']!r}")
            names.add(case["name"])
            cases.append((f.name, case))
    return cases


def load_known_divergences(path: Path, case_names):
    if not path.exists():
        return []
    doc = load_json_array(path, "a JSON array")
    names = set()
    for kd in doc:
        if not isinstance(kd, dict) or set(kd) != {"name", "note", "input", "want", "opa", "regorus"}:
            raise SetupError(f"{path}: an entry is exactly {{name, note, input, want, opa, regorus}}")
        problem = case_problem({k: kd[k] for k in ("name", "input", "want")})
        if problem:
            raise SetupError(f"{path}: {kd['name']}: {problem}")
        if kd["opa"] == kd["regorus"]:
            raise SetupError(f"{path}: {kd['name']}: opa and regorus are recorded identical; that is a case")
        if kd["name"] in names or kd["name"] in case_names:
            raise SetupError(f"{path}: duplicate case name {kd['name']!r}")
        names.add(kd["name"])
    return doc


def case_problem(case) -> str | None:
    if not isinstance(case, dict) or set(case) != {"name", "input", "want"}:
        return "a case is exactly {name, input, want}"
    if not isinstance(case["name"], str) or not case["name"]:
        return "name must be a non-empty string"
    if case["input"] is None:
        # The bindings pass None as "no input at all", which is not what regorus sees for null.
        return "input null cannot be evaluated identically by both engines"
    want = case["want"]
    if not isinstance(want, dict) or not {"allow", "require_approval", "rule_ids"} <= set(want) <= {
        "allow", "require_approval", "rule_ids", "reasons", "visible_tools", "cacheable", "placement"}:
        return "want is {allow, require_approval, rule_ids[, reasons][, visible_tools][, cacheable][, placement]}"
    if "visible_tools" in want and not (isinstance(case["input"], dict) and case["input"].get("method") == "tools/list"):
        return "want.visible_tools is only for tools/list inputs"
    if not isinstance(want["allow"], bool) or not isinstance(want["require_approval"], bool):
        return "want.allow and want.require_approval are booleans"
    for key in ("rule_ids", "reasons", "visible_tools"):
        if key in want and not (isinstance(want[key], list) and all(isinstance(s, str) for s in want[key])):
            return f"want.{key} is a list of strings"
    return None


# --- decisions ---------------------------------------------------------------------------------


def opa_decision(opa, engine, input_doc):
    try:
        return engine.eval_document(DECISION, input_doc), None
    except opa.OpaUndefinedError:
        return UNDEFINED_DECISION, None
    except opa.OpaError as e:
        return None, f"OPA evaluation error: {e}"


def regorus_decision(args, input_file: Path, input_doc):
    input_file.write_text(json.dumps(input_doc))
    cmd = [str(args.portcullis), "policy", "eval", "--json", "--input", str(input_file),
           "--policies", str(args.policies), "--catalog", str(args.catalog)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if proc.returncode not in (EXIT_ALLOWED, EXIT_DENIED):
        return None, f"portcullis policy eval exited {proc.returncode}: {proc.stderr.strip()}"
    try:
        doc = json.loads(proc.stdout)
    except ValueError as e:
        return None, f"portcullis policy eval printed no JSON decision ({e}): {proc.stdout!r}"
    if not isinstance(doc, dict) or not isinstance(doc.get("allow"), bool):
        return None, f"portcullis policy eval printed {doc!r}, not a decision document"
    want_rc = EXIT_ALLOWED if doc["allow"] else EXIT_DENIED
    if proc.returncode != want_rc:
        return None, f"portcullis policy eval exited {proc.returncode} for allow={doc['allow']}, want {want_rc}"
    return doc, None


def both_decisions(opa, engine, args, input_file: Path, case):
    """(opa document, regorus document, problems), checking both against the case's want."""
    problems = []
    opa_doc, err = opa_decision(opa, engine, case["input"])
    if err:
        problems.append(err)
    reg_doc, err = regorus_decision(args, input_file, case["input"])
    if err:
        problems.append(f"regorus: {err}")
    for engine_name, doc in (("opa", opa_doc), ("regorus", reg_doc)):
        if not isinstance(doc, dict):
            continue
        for key, value in case["want"].items():
            if doc.get(key) != value:
                problems.append(f"{engine_name}: {key} is {json.dumps(doc.get(key))}, want {json.dumps(value)}")
    return opa_doc, reg_doc, problems


def check_case(opa, engine, args, input_file: Path, source: str, case) -> bool:
    opa_doc, reg_doc, problems = both_decisions(opa, engine, args, input_file, case)
    if opa_doc is not None and reg_doc is not None and opa_doc != reg_doc:
        problems.insert(0, "OPA and regorus disagree:")
        problems.insert(1, f"  opa:     {canonical(opa_doc)}")
        problems.insert(2, f"  regorus: {canonical(reg_doc)}")
    return report(f"{source}: {case['name']}", problems)


def check_known_divergence(opa, engine, args, input_file: Path, kd) -> bool:
    label = f"{args.known_divergences.name}: {kd['name']}"
    opa_doc, reg_doc, problems = both_decisions(opa, engine, args, input_file, kd)
    if opa_doc is not None and opa_doc == reg_doc:
        problems.append("OPA and regorus now agree: move this case into policies/cases")
    else:
        for engine_name, doc in (("opa", opa_doc), ("regorus", reg_doc)):
            if doc is not None and doc != kd[engine_name]:
                problems.append(f"{engine_name} diverges differently than recorded:")
                problems.append(f"  recorded: {canonical(kd[engine_name])}")
                problems.append(f"  now:      {canonical(doc)}")
    if problems:
        return report(label, problems)
    print(f"KNOWN {label}")
    print(f"       opa:     {canonical(opa_doc)}")
    print(f"       regorus: {canonical(reg_doc)}")
    return True


def report(label: str, problems) -> bool:
    if problems:
        print(f"FAIL {label}")
        for p in problems:
            print(f"       {p}")
        return False
    print(f"PASS {label}")
    return True


def canonical(doc) -> str:
    return json.dumps(doc, sort_keys=True, ensure_ascii=False)


# --- Rego unit tests ---------------------------------------------------------------------------


def discover_tests(tests):
    """data paths (without `data.`) of every test_* rule, in file order, deduplicated."""
    found = []
    for name, source in tests:
        m = PACKAGE.search(source)
        if not m:
            continue
        for line in source.splitlines():
            t = TEST_RULE.match(line)
            if t and f"{m.group(1)}.{t.group(1)}" not in found:
                found.append(f"{m.group(1)}.{t.group(1)}")
    return found


def regorus_tests(args):
    """{data path: (passed, detail)} from `portcullis policy test`, or an error string."""
    cmd = [str(args.portcullis), "policy", "test", "--policies", str(args.policies), "--catalog", str(args.catalog)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    outcomes = {}
    for line in proc.stdout.splitlines():
        m = re.match(r"^(PASS|FAIL) data\.(\S+)(?: \((.*)\))?$", line)
        if m:
            outcomes[m.group(2)] = (m.group(1) == "PASS", m.group(3))
    if not outcomes:
        return None, f"portcullis policy test (exit {proc.returncode}) reported no tests: {proc.stderr.strip()}"
    return outcomes, None


def check_unit_tests(opa, engine, args, tests):
    results = []
    names = discover_tests(tests)
    if not names:
        print(f"FAIL unit tests: no test_* rules in {args.policies}/*_test.rego")
        return [False]
    regorus, err = regorus_tests(args)
    if err:
        print(f"FAIL unit tests under regorus: {err}")
        results.append(False)
        regorus = {}
    for path in names:
        problems = []
        try:
            value = engine.eval_document(path)
            if value is not True:
                problems.append(f"opa: evaluated to {json.dumps(value)}, want true")
        except opa.OpaUndefinedError:
            problems.append("opa: undefined, want true")
        except opa.OpaError as e:
            problems.append(f"opa: error: {e}")
        if regorus is not None and not err:
            outcome = regorus.get(path)
            if outcome is None:
                problems.append("regorus: portcullis policy test did not run it")
            elif not outcome[0]:
                problems.append(f"regorus: failed ({outcome[1]})")
        if problems:
            print(f"FAIL test data.{path}")
            for p in problems:
                print(f"       {p}")
            results.append(False)
        else:
            print(f"PASS test data.{path} (opa and regorus)")
            results.append(True)
    for path in sorted(set(regorus or {}) - set(names)):
        print(f"FAIL test data.{path}: run by portcullis policy test but not found for OPA")
        results.append(False)
    return results


if __name__ == "__main__":
    sys.exit(main())
