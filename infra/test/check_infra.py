"""Checks that hold infra/ to the code and to functions.json, the one list of each Lambda
function's environment variables and IAM actions. Run by infra/test/run:

    check_infra.py checkov REPORT.json   no failed check; every skip has its reason beside it
    check_infra.py static                crates, Terraform and functions.json agree; every
                                         PGKEEP_* variable a function reads is set for it;
                                         every AWS call in the code is granted to a function
    check_infra.py deployed PLAN.json    the stack applied to the emulator (terraform show
                                         -json of the plan after apply, whose prior state is
                                         the refreshed stack) has one function per crate, each
                                         with exactly
                                         its environment and its role's actions
    check_infra.py code PLAN.json ARTIFACTS LAYER.zip|-
                                         the emulator's Lambda API says each zip function runs
                                         ARTIFACTS/<function>/bootstrap.zip and the pg tools
                                         layer is LAYER.zip (boto3, which checkov brings along)

Needs only the standard library and hcl2 (bc-python-hcl2, which checkov brings along).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
SPEC = json.loads((INFRA / "functions.json").read_text())
FUNCTIONS = SPEC["functions"]
GROUPS = {k for k in SPEC["permission_groups"] if k != "about"}
# Groups that are the platform's needs, not calls in pgkeep's code.
# rds_db: RDS checks rds-db:connect when the token (signed locally, no API call) is presented.
PLATFORM_GROUPS = {"logs", "dlq", "tracing", "key_via_s3", "key_via_sns", "login_cmk", "rds_db"}
ENV_NAME = re.compile(r"PGKEEP_[A-Z0-9_]+")

# SDK operation (snake_case method of the Rust SDK client) -> the IAM action it needs.
SDK_ACTIONS = {
    "s3": {
        "put_object": "s3:PutObject",
        "create_multipart_upload": "s3:PutObject",
        "upload_part": "s3:PutObject",
        "complete_multipart_upload": "s3:PutObject",
        "abort_multipart_upload": "s3:AbortMultipartUpload",
        "list_multipart_uploads": "s3:ListBucketMultipartUploads",
        "get_object": "s3:GetObject",
        # HeadObject returns the object-lock headers only to callers with these two as well
        # (delete_backup reads them before deleting).
        "head_object": ["s3:GetObject", "s3:GetObjectRetention", "s3:GetObjectLegalHold"],
        "delete_object": "s3:DeleteObject",
        "list_objects_v2": "s3:ListBucket",
    },
    "dynamodb": {
        "get_item": "dynamodb:GetItem",
        "put_item": "dynamodb:PutItem",
        "update_item": "dynamodb:UpdateItem",
        "delete_item": "dynamodb:DeleteItem",
        "query": "dynamodb:Query",
        "scan": "dynamodb:Scan",
        "batch_write_item": "dynamodb:BatchWriteItem",
        "transact_write_items": "dynamodb:PutItem",
        "create_table": "dynamodb:CreateTable",
        "update_time_to_live": "dynamodb:UpdateTimeToLive",
        "describe_table": "dynamodb:DescribeTable",
    },
    "kms": {
        "generate_data_key": "kms:GenerateDataKey",
        "decrypt": "kms:Decrypt",
        "encrypt": "kms:Encrypt",
        "describe_key": "kms:DescribeKey",
    },
    "secretsmanager": {"get_secret_value": "secretsmanager:GetSecretValue"},
    "lambda": {"invoke": "lambda:InvokeFunction"},
    "sns": {"publish": "sns:Publish"},
}
# Calls made only by the CLI's setup commands and never by a function.
CLI_ONLY = {"dynamodb:CreateTable", "dynamodb:UpdateTimeToLive", "dynamodb:DescribeTable", "kms:DescribeKey",
            # `pgkeep init` giving records of an older pgkeep their sort key (docs/DYNAMODB.md).
            "dynamodb:Scan", "dynamodb:UpdateItem"}

failures: list[str] = []


def fail(message: str) -> None:
    failures.append(message)


def finish(what: str) -> None:
    if failures:
        for f in failures:
            print(f"FAIL {f}", file=sys.stderr)
        print(f"{what}: {len(failures)} failure(s)", file=sys.stderr)
        sys.exit(1)
    print(f"{what}: ok")


def sid_of(group: str) -> str:
    """The statement id iam.tf gives a group: key_via_s3 -> KeyViaS3."""
    return "".join(part[:1].upper() + part[1:] for part in group.split("_"))


def function_env(name: str) -> list[str]:
    return list(dict.fromkeys(SPEC["common_env"] + FUNCTIONS[name]["env"]))


def crates() -> set[str]:
    return {p.parent.name for p in (ROOT / "functions").glob("*/Cargo.toml")}


def without_tests(text: str) -> str:
    """Rust source up to its `#[cfg(test)]` module (tests may name anything)."""
    m = re.search(r"^#\[cfg\(test\)\]\s*\nmod \w+", text, re.M)
    return text[: m.start()] if m else text


# ---------------------------------------------------------------- checkov


def check_checkov(report_path: str) -> None:
    text = Path(report_path).read_text().strip()
    if not text:
        fail("checkov wrote no report (see .work/infra-test/checkov.log)")
        return finish("checkov")
    report = json.loads(text)
    reports = report if isinstance(report, list) else [report]
    skipped = []
    for r in reports:
        summary = r.get("summary", {})
        if summary.get("parsing_errors"):
            fail(f"checkov could not parse: {r.get('results', {}).get('parsing_errors')}")
        if summary.get("passed", 0) == 0:
            fail("checkov passed no check at all: did it scan infra/?")
        for c in r.get("results", {}).get("failed_checks", []):
            fail(f"checkov {c['check_id']} ({c['check_name']}) on {c['resource']} in {c['file_path']}:{c['file_line_range']}")
        skipped += r.get("results", {}).get("skipped_checks", [])
    # Every skip is an inline comment with a reason (`#checkov:skip=ID:reason`).
    skips = {}
    for tf in sorted(INFRA.rglob("*.tf")) + [INFRA / "Dockerfile"]:
        if ".terraform" in tf.parts:
            continue
        for m in re.finditer(r"#\s*checkov:skip=([A-Z0-9_]+)(?::(.*))?", tf.read_text()):
            reason = (m.group(2) or "").strip()
            if len(reason) < 20:
                fail(f"{tf.relative_to(ROOT)}: checkov skip {m.group(1)} has no real reason beside it")
            skips[m.group(1)] = reason
    for c in skipped:
        if c["check_id"] not in skips:
            fail(f"checkov skipped {c['check_id']} without an inline justification")
        print(f"skipped {c['check_id']} on {c['resource']}: {skips.get(c['check_id'], '?')}")
    passed = sum(r.get("summary", {}).get("passed", 0) for r in reports)
    print(f"checkov: {passed} passed, {len(skipped)} skipped (each justified above)")
    finish("checkov")


# ---------------------------------------------------------------- static


def load_tf(path: Path) -> dict:
    import hcl2  # bc-python-hcl2, from checkov's virtualenv

    with path.open() as f:
        return hcl2.load(f)


def blocks(tree: dict, kind: str) -> dict[str, dict]:
    """resource/data blocks of one kind in a parsed module: {"type.name": body}."""
    out = {}
    for tf in tree.values():
        for entry in tf.get(kind, []):
            for rtype, named in entry.items():
                for name, body in named.items():
                    out[f"{rtype}.{name}"] = body
    return out


def module_locals(tree: dict) -> dict:
    out = {}
    for tf in tree.values():
        for entry in tf.get("locals", []):
            out.update({k: v[0] if isinstance(v, list) and len(v) == 1 else v for k, v in entry.items()})
    return out


def source_text(spec: str) -> str:
    """The code an env_sources entry names: a file, or `path#fn` for one function in it."""
    path, _, function = spec.partition("#")
    text = without_tests((ROOT / path).read_text())
    if not function:
        return text
    m = re.search(rf"\bfn {re.escape(function)}\b", text)
    if not m:
        fail(f"env_sources: {path} has no fn {function}")
        return ""
    start = text.index("{", m.end())
    depth = 0
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[m.start() : i + 1]
    return text[m.start() :]


def crate_sources(name: str) -> str:
    files = sorted(p for p in (ROOT / "functions" / name).rglob("*.rs") if p.name != "tests.rs")
    return "\n".join(without_tests(p.read_text()) for p in files)


def env_satisfied(name: str, available: set[str]) -> bool:
    # A name ending in "_" is a prefix the code completes (PGKEEP_KEEP_ + DAILY...).
    if name.endswith("_"):
        return any(a.startswith(name) for a in available)
    return name in available


def check_static() -> None:
    tree = {p.name: load_tf(p) for p in sorted(INFRA.glob("*.tf"))}
    resources = blocks(tree, "resource")
    data = blocks(tree, "data")
    loc = module_locals(tree)

    # Each function's environment lists a variable once (merges have doubled entries before).
    for name, spec in FUNCTIONS.items():
        doubled = sorted({v for v in spec["env"] if spec["env"].count(v) > 1})
        if doubled:
            fail(f"functions.json: {name} lists {doubled} more than once")

    # API Gateway routes exactly what the status function serves (shared/src/api.rs's match).
    served = set()
    for method, segments in re.findall(r'\("(GET|POST|PUT|PATCH|DELETE)", \[([^\]]*)\]\) =>',
                                       (ROOT / "shared" / "src" / "api.rs").read_text()):
        parts = [p.strip() for p in segments.split(",") if p.strip()]
        served.add(method + " /" + "/".join(p.strip('"') if p.startswith('"') else "{" + p + "}" for p in parts))
    routed = set(loc.get("api_routes", []))
    if not served:
        fail("found no routes in shared/src/api.rs (has its match changed shape?)")
    elif routed != served:
        fail(f"infra/api.tf api_routes differ from the routes shared/src/api.rs serves: "
             f"missing {sorted(served - routed)}, extra {sorted(routed - served)}")

    # Every crate under functions/ has a Lambda function, and every function a crate.
    if set(FUNCTIONS) != crates():
        fail(f"functions.json names {sorted(FUNCTIONS)} but functions/ holds crates {sorted(crates())}")
    lambdas = {k: v for k, v in resources.items() if k.startswith("aws_lambda_function.")}
    if list(lambdas) != ["aws_lambda_function.function"]:
        fail(f"expected the one for_each Lambda resource aws_lambda_function.function, found {sorted(lambdas)}")
    else:
        fn = lambdas["aws_lambda_function.function"]
        if fn.get("for_each") != ["${local.functions}"]:
            fail("aws_lambda_function.function is not one per entry of local.functions")
        env = fn.get("environment", [{}])[0].get("variables")
        if env != ["${local.function_env[each.key]}"]:
            fail(f"the functions' environment is not local.function_env: {env}")
    if "jsondecode(file(\"${path.module}/functions.json\"))" not in str(loc.get("spec")):
        fail("local.spec does not read functions.json")
    if loc.get("functions") != "${local.spec.functions}":
        fail("local.functions is not functions.json's functions")
    if "local.spec.common_env" not in str(loc.get("function_env")) or "s.env" not in str(loc.get("function_env")):
        fail("local.function_env is not built from functions.json's common_env and env lists")

    # Every variable a function reads is in its list, and every listed variable has a value.
    env_values = loc.get("env_values", {})
    never_set = {k for k in SPEC["never_set"] if k != "about"}
    shared = ""
    for spec in SPEC["env_sources"]["files"]:
        if not (ROOT / spec.partition("#")[0]).exists():
            fail(f"functions.json env_sources names {spec}, which does not exist")
            continue
        shared += source_text(spec)
    for name in FUNCTIONS:
        listed = set(function_env(name))
        read = set(ENV_NAME.findall(crate_sources(name) + shared))
        for var in sorted(read - never_set):
            if not env_satisfied(var, listed | never_set):
                fail(f"the {name} function reads {var}, which functions.json neither lists for it nor leaves unset on purpose (never_set)")
        for var in sorted(listed):
            if var not in env_values:
                fail(f"functions.json lists {var} for {name} but locals.tf gives it no value")
    optional = set(SPEC["optional_env"]["names"])
    for var in optional - set(env_values):
        fail(f"optional variable {var} has no value in locals.tf")

    # Each role is built from its actions in functions.json, on the resources of each group.
    policy = data.get("aws_iam_policy_document.function", {})
    dyn = json.dumps(policy.get("dynamic", ""))
    if "each.value.actions" not in dyn or "local.group_resources" not in dyn:
        fail("data.aws_iam_policy_document.function is not built from functions.json's actions and local.group_resources")
    hand_written = set(policy) - {"for_each", "dynamic", "__start_line__", "__end_line__"}
    if hand_written:
        fail(f"the functions' policy has blocks besides the generated statements: {sorted(hand_written)}")
    defined_groups = set(re.findall(r"'(\w+)':", str(loc.get("group_resources"))))
    for name, f in FUNCTIONS.items():
        for group in f["actions"]:
            if group not in GROUPS:
                fail(f"{name}: unknown permission group {group}")
            if group not in defined_groups:
                fail(f"{name}: group {group} has no resources in iam.tf's local.group_resources")
        for target in f["invokes"]:
            if target not in FUNCTIONS:
                fail(f"{name} invokes {target}, which is not a function")
        if bool(f["invokes"]) != ("invoke" in f["actions"]):
            fail(f"{name}: `invokes` and the invoke permission disagree")
    extra = {k for k in resources if k.startswith(("aws_iam_policy.", "aws_iam_role_policy_attachment."))} - {"aws_iam_role_policy_attachment.vpc"}
    if extra:
        fail(f"policies outside functions.json: {sorted(extra)}")

    check_code_calls()
    finish("static")


def check_code_calls() -> None:
    """Every AWS call in the code is granted to some function; no granted action is never called."""
    sources = [p for p in (ROOT / "shared" / "src").rglob("*.rs") if "testing" not in p.name]
    sources += sorted((ROOT / "functions").rglob("*.rs"))
    granted = {a for f in FUNCTIONS.values() for g, acts in f["actions"].items() if g not in PLATFORM_GROUPS for a in acts}
    called: set[str] = set()
    services_in_code: set[str] = set()
    for p in sources:
        text = without_tests(p.read_text())
        for service, ops in SDK_ACTIONS.items():
            crate = f"aws_sdk_{service}"
            if crate not in text:
                continue
            services_in_code.add(service)
            for op, action in ops.items():
                if re.search(rf"\.{op}\(\)", text):
                    called.update(action if isinstance(action, list) else [action])
    for action in sorted(called - granted - CLI_ONLY):
        fail(f"the code calls {action}, which no function's role grants (functions.json)")
    for action in sorted(granted - called):
        service = action.split(":")[0]
        if service in services_in_code:
            fail(f"functions.json grants {action}, which no code calls")
        else:
            print(f"note: {action} is granted for code not written yet (no aws_sdk_{service} use in shared/ or functions/)")


# ---------------------------------------------------------------- deployed


def deployed_resources(state: dict) -> list[dict]:
    out = []

    def walk(module: dict) -> None:
        out.extend(module.get("resources", []))
        for child in module.get("child_modules", []):
            walk(child)

    # A saved plan's prior_state is the refreshed stack; a state file has values at the top.
    walk(state.get("prior_state", state)["values"]["root_module"])
    return out


def by_key(resources: list[dict], rtype: str, name: str) -> dict:
    return {r.get("index"): r["values"] for r in resources if r["type"] == rtype and r["name"] == name and r["mode"] == "managed"}


def as_list(v):
    return v if isinstance(v, list) else [v]


def policy_actions(document: str) -> dict[str, list[str]]:
    statements = json.loads(document)["Statement"]
    out: dict[str, list[str]] = {}
    for s in statements:
        out.setdefault(s.get("Sid", ""), []).extend(as_list(s["Action"]))
    return {k: sorted(v) for k, v in out.items()}


def check_deployed(state_path: str) -> None:
    state = json.loads(Path(state_path).read_text())
    res = deployed_resources(state)
    functions = by_key(res, "aws_lambda_function", "function")
    roles = by_key(res, "aws_iam_role", "function")
    policies = by_key(res, "aws_iam_role_policy", "function")
    vpc = by_key(res, "aws_iam_role_policy_attachment", "vpc")
    layers = list(by_key(res, "aws_lambda_layer_version", "pg_tools").values())

    if set(functions) != crates():
        fail(f"deployed functions {sorted(functions)} are not the crates {sorted(crates())}")
    for name, fn in sorted(functions.items()):
        spec = FUNCTIONS.get(name)
        if spec is None:
            continue
        env = (fn.get("environment") or [{}])[0].get("variables") or {}
        if sorted(env) != sorted(function_env(name)):
            missing = sorted(set(function_env(name)) - set(env))
            extra = sorted(set(env) - set(function_env(name)))
            fail(f"{name}: environment differs from functions.json (missing {missing}, extra {extra})")
        checks = {
            "PGKEEP_REPO": lambda v: v.startswith("s3://") and "/" in v[5:],
            "PGKEEP_CATALOG": lambda v: v.startswith("dynamodb://"),
            "PGKEEP_KEY": lambda v: v.startswith("kms://arn:"),
            "PGKEEP_DATABASES": lambda v: all(set(d) <= {"secret_arn", "url"} and len(d) == 1 for d in json.loads(v).values()),
            "PGKEEP_DUMP_FUNCTION": lambda v: v == functions["dump"]["function_name"],
            "PGKEEP_VERIFY_FUNCTION": lambda v: v == functions["verify"]["function_name"],
            "PGKEEP_ALERT_TOPIC_ARN": lambda v: v.startswith("arn:aws:sns:"),
        }
        for var, ok in checks.items():
            if var in env and not ok(env[var]):
                fail(f"{name}: {var}={env[var]!r} is not what the code expects")
        if fn["role"] != roles[name]["arn"]:
            fail(f"{name}: runs with {fn['role']}, not its own role")
        # The emulator stack runs the functions that need pg_dump from the image, or (when it
        # publishes the pg tools layer) from their zips with that layer; the rest from zips.
        if spec["needs_pg_tools"] and not layers:
            entry = (fn.get("image_config") or [{}])[0].get("entry_point")
            if fn["package_type"] != "Image" or entry != [f"/var/task/{name}"]:
                fail(f"{name}: not started from its binary in the pg tools image ({fn['package_type']}, {entry})")
        elif (fn["package_type"], fn["handler"], fn["runtime"]) != ("Zip", "bootstrap", "provided.al2023"):
            fail(f"{name}: not a provided.al2023 bootstrap zip")
        want_layers = [layers[0]["arn"]] if layers and spec["needs_pg_tools"] else []
        if (fn.get("layers") or []) != want_layers:
            fail(f"{name}: layers {fn.get('layers')}, expected {want_layers}")
        if fn["architectures"] != ["x86_64"]:
            fail(f"{name}: architectures {fn['architectures']}")
        in_vpc = bool(fn.get("vpc_config") and fn["vpc_config"][0].get("subnet_ids"))
        if in_vpc != spec["in_vpc"]:
            fail(f"{name}: in a VPC is {in_vpc}, functions.json says {spec['in_vpc']}")

        # The role: one inline policy, exactly the groups and actions of functions.json.
        inline = [p["name"] for p in roles[name].get("inline_policy", []) if p.get("name")]
        if inline != [policies[name]["name"]]:
            fail(f"{name}: role has inline policies {inline}")
        want = {sid_of(g): sorted(a) for g, a in spec["actions"].items()}
        got = policy_actions(policies[name]["policy"])
        if got != want:
            for sid in sorted(set(want) | set(got)):
                if want.get(sid) != got.get(sid):
                    fail(f"{name}: statement {sid} grants {got.get(sid)}, functions.json says {want.get(sid)}")
        managed = sorted(roles[name].get("managed_policy_arns") or [])
        expected_managed = [vpc[name]["policy_arn"]] if name in vpc else []
        if managed and managed != expected_managed:
            fail(f"{name}: managed policies {managed}")
        if (name in vpc) != spec["in_vpc"]:
            fail(f"{name}: VPC access policy attached is {name in vpc}, functions.json says in_vpc={spec['in_vpc']}")

    # The key policy gives each role exactly its key uses.
    key = next(iter(by_key(res, "aws_kms_key", "pgkeep").values()))
    if not key["enable_key_rotation"]:
        fail("key rotation is off")
    key_statements = json.loads(key["policy"])["Statement"]
    for s in key_statements:
        if "kms:*" in as_list(s["Action"]):
            fail(f"key policy statement {s.get('Sid')} grants kms:*")
    role_arns = {roles[n]["arn"]: n for n in roles}
    for name, spec in FUNCTIONS.items():
        for group in ("key", "key_via_s3", "key_via_sns"):
            want = sorted(spec["actions"].get(group, []))
            got = sorted(
                a
                for s in key_statements
                if role_arns.get(str(s.get("Principal", {}).get("AWS"))) == name
                and (group == "key") == ("Condition" not in s)
                and (group == "key" or f"{group[8:]}." in json.dumps(s["Condition"]))
                for a in as_list(s["Action"])
            )
            if want != got:
                fail(f"key policy gives {name} {got} for {group}, functions.json says {want}")

    # The catalog table is the one the DynamoDB catalog expects.
    table = next(iter(by_key(res, "aws_dynamodb_table", "catalog").values()))
    indexes = {i["name"]: (i["hash_key"], i["range_key"], i["projection_type"]) for i in table["global_secondary_index"]}
    if table["hash_key"] != "pk" or table.get("range_key"):
        fail(f"catalog key schema {table['hash_key']}/{table.get('range_key')} is not pk")
    expected_indexes = {"by_time": ("item_type", "start_key", "ALL"), "by_database": ("database_key", "start_key", "ALL"), "by_status": ("status_key", "start_key", "ALL")}
    if indexes != expected_indexes:
        fail(f"catalog indexes {indexes}")
    if table["ttl"][0] != {"attribute_name": "ttl", "enabled": True}:
        fail(f"catalog TTL {table['ttl']}")
    if not table["point_in_time_recovery"][0]["enabled"]:
        fail("catalog has no point-in-time recovery")
    if table["server_side_encryption"][0]["kms_key_arn"] != key["arn"]:
        fail("catalog is not encrypted with the pgkeep key")

    # Schedules: dump, verify and prune for every database, aimed at the right function.
    schedules = by_key(res, "aws_scheduler_schedule", "run")
    databases = set(json.loads((functions["dump"]["environment"][0]["variables"])["PGKEEP_DATABASES"]))
    want = {f"{f}-{db}" for f, s in FUNCTIONS.items() if s["scheduled"] for db in databases}
    if set(schedules) != want:
        fail(f"schedules {sorted(schedules)}, expected {sorted(want)}")
    for key_name, s in schedules.items():
        f, db = key_name.split("-", 1)
        target = s["target"][0]
        if target["arn"] != functions[f]["arn"]:
            fail(f"schedule {key_name} starts {target['arn']}")
        if json.loads(target["input"])["detail"]["database"] != db:
            fail(f"schedule {key_name} does not name database {db}")

    # The health check: the prune function, asked only to check.
    health = by_key(res, "aws_scheduler_schedule", "health")
    if len(health) != 1:
        fail(f"health check schedules {sorted(health)}, expected one")
    for s in health.values():
        target = s["target"][0]
        if target["arn"] != functions["prune"]["arn"]:
            fail(f"the health check starts {target['arn']}, not the prune function")
        if json.loads(target["input"])["detail"] != {"check": "health"}:
            fail(f"the health check's detail is {json.loads(target['input'])['detail']}")

    packaging = "dump and verify zips with the pg tools layer" if layers else "dump and verify from the image"
    print(f"deployed: {len(functions)} functions ({packaging}), {len(schedules)} schedules and the health check, roles and key policy match functions.json")
    finish("deployed")


# ---------------------------------------------------------------- code


def zip_sha256(path: Path) -> str:
    import base64
    import hashlib

    return base64.b64encode(hashlib.sha256(path.read_bytes()).digest()).decode()


def check_code(plan_path: str, artifacts: str, layer_zip: str) -> None:
    """Asks the emulator's Lambda API (not Terraform's state) what each function runs: a zip
    function's CodeSha256 must be its artifacts/<function>/bootstrap.zip's, a published pg tools
    layer's that of layer_zip ("-": none expected), and the functions must name that layer."""
    import os

    import boto3

    res = deployed_resources(json.loads(Path(plan_path).read_text()))
    functions = by_key(res, "aws_lambda_function", "function")
    layers = list(by_key(res, "aws_lambda_layer_version", "pg_tools").values())
    client = boto3.client("lambda", endpoint_url=os.environ["PGKEEP_TEST_AWS_ENDPOINT"], region_name="us-east-1")
    layer_arn = None
    if layer_zip != "-":
        if len(layers) != 1:
            fail(f"expected one published pg tools layer, the state has {len(layers)}")
        else:
            layer_arn = layers[0]["layer_arn"]
            version = client.get_layer_version(LayerName=layers[0]["layer_name"], VersionNumber=int(layers[0]["version"]))
            if version["Content"]["CodeSha256"] != zip_sha256(Path(layer_zip)):
                fail(f"layer {layers[0]['arn']}: CodeSha256 {version['Content']['CodeSha256']} is not {layer_zip}'s {zip_sha256(Path(layer_zip))}")
    elif layers:
        fail("a pg tools layer is published, none expected")
    zips = 0
    for name, fn in sorted(functions.items()):
        config = client.get_function(FunctionName=fn["function_name"])["Configuration"]
        if config.get("PackageType", "Zip") != "Zip":
            continue
        zips += 1
        want = zip_sha256(Path(artifacts) / name / "bootstrap.zip")
        if config["CodeSha256"] != want:
            fail(f"{name}: the emulator runs code {config['CodeSha256']}, not {artifacts}/{name}/bootstrap.zip ({want})")
        got_layers = [layer["Arn"] for layer in config.get("Layers", [])]
        want_layers = [layers[0]["arn"]] if layer_arn and FUNCTIONS[name]["needs_pg_tools"] else []
        if got_layers != want_layers:
            fail(f"{name}: the emulator has layers {got_layers}, expected {want_layers}")
    print(f"code: {zips} zip functions run exactly the built zips" + (", with the built layer" if layer_arn else ""))
    finish("code")


def main(argv: list[str]) -> None:
    if len(argv) >= 2 and argv[1] == "checkov":
        check_checkov(argv[2])
    elif len(argv) == 2 and argv[1] == "static":
        check_static()
    elif len(argv) == 3 and argv[1] == "deployed":
        check_deployed(argv[2])
    elif len(argv) == 5 and argv[1] == "code":
        check_code(argv[2], argv[3], argv[4])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
