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
# pass_task_roles: ECS checks iam:PassRole when RunTask hands the task its roles (no IAM call).
PLATFORM_GROUPS = {"logs", "dlq", "tracing", "key_via_s3", "key_via_sns", "login_cmk", "rds_db", "pass_task_roles"}
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
    "ecs": {"run_task": "ecs:RunTask"},
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

    # The Fargate job's task definition: the environment of the functions it runs, built like
    # theirs; its role from the same action lists (tasks.tf, functions.json's task).
    task_def = resources.get("aws_ecs_task_definition.job", {})
    containers = str(task_def.get("container_definitions"))
    for needle in ("local.task_env", "local.task_secret_env", "/var/task/pgkeep", "job"):
        if needle not in containers:
            fail(f"aws_ecs_task_definition.job's container does not use {needle}")
    if "local.spec.common_env" not in str(loc.get("task_env_all")) or "local.task_spec.runs" not in str(loc.get("task_env_all")):
        fail("local.task_env_all is not built from functions.json's common_env and the env of task.runs")
    task_policy = json.dumps(data.get("aws_iam_policy_document.task", {}).get("dynamic", ""))
    if "local.task_actions" not in task_policy or "local.task_group_resources" not in task_policy:
        fail("data.aws_iam_policy_document.task is not built from local.task_actions and local.task_group_resources")
    for f in SPEC["task"]["runs"]:
        if f not in FUNCTIONS:
            fail(f"functions.json task.runs names {f}, which is not a function")
    for v in SPEC["task"]["secret_env"]:
        if not any(v in function_env(f) for f in SPEC["task"]["runs"]):
            fail(f"functions.json task.secret_env names {v}, which no function of task.runs gets")

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

    task_defs = by_key(res, "aws_ecs_task_definition", "job")
    # Without a fargate or auto database there is no cluster, task definition or task role, so
    # neither the variables naming them nor the permissions on them.
    uses_fargate = bool(task_defs)
    fargate_only = set() if uses_fargate else set(SPEC["optional_env"]["fargate_only"])
    fargate_groups = set() if uses_fargate else {"run_task", "pass_task_roles"}

    if set(functions) != crates():
        fail(f"deployed functions {sorted(functions)} are not the crates {sorted(crates())}")
    for name, fn in sorted(functions.items()):
        spec = FUNCTIONS.get(name)
        if spec is None:
            continue
        env = (fn.get("environment") or [{}])[0].get("variables") or {}
        want_env = [v for v in function_env(name) if v not in fargate_only]
        if sorted(env) != sorted(want_env):
            missing = sorted(set(want_env) - set(env))
            extra = sorted(set(env) - set(want_env))
            fail(f"{name}: environment differs from functions.json (missing {missing}, extra {extra})")
        checks = {
            "PGKEEP_REPO": lambda v: v.startswith("s3://") and "/" in v[5:],
            "PGKEEP_CATALOG": lambda v: v.startswith("dynamodb://"),
            "PGKEEP_KEY": lambda v: v.startswith("kms://arn:"),
            "PGKEEP_DATABASES": lambda v: all(set(d) <= {"secret_arn", "url"} and len(d) == 1 for d in json.loads(v).values()),
            "PGKEEP_DUMP_FUNCTION": lambda v: v == functions["dump"]["function_name"],
            "PGKEEP_VERIFY_FUNCTION": lambda v: v == functions["verify"]["function_name"],
            "PGKEEP_ALERT_TOPIC_ARN": lambda v: v.startswith("arn:aws:sns:"),
            "PGKEEP_RUNNERS": lambda v: set(json.loads(v)) == set(json.loads(env["PGKEEP_DATABASES"]))
            and set(json.loads(v).values()) <= {"lambda", "fargate", "auto"},
            "PGKEEP_JOBS": lambda v: set(json.loads(v)) == set(json.loads(env["PGKEEP_DATABASES"]))
            and all(isinstance(n, int) and n >= 1 for n in json.loads(v).values()),
            "PGKEEP_FARGATE_TASK_DEFINITIONS": lambda v: json.loads(v)
            == {db: td["arn_without_revision"] for db, td in task_defs.items()},
            "PGKEEP_FARGATE_SUBNETS": lambda v: v.split(",") == fn["vpc_config"][0]["subnet_ids"]
            if fn.get("vpc_config") else bool(v),
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
        want = {sid_of(g): sorted(a) for g, a in spec["actions"].items() if g not in fargate_groups}
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
    task_role = next(iter(by_key(res, "aws_iam_role", "task").values()), None)
    holders = dict(FUNCTIONS)
    if task_role:
        role_arns[task_role["arn"]] = "task"
        holders["task"] = {"actions": task_actions()}
    for name, spec in holders.items():
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
    runners = json.loads(functions["dump"]["environment"][0]["variables"]["PGKEEP_RUNNERS"])
    on_ecs = 0
    for key_name, s in schedules.items():
        f, db = key_name.split("-", 1)
        target = s["target"][0]
        if runners.get(db) == "fargate" and f in ("dump", "verify"):
            on_ecs += 1
            check_run_task_schedule(key_name, f, db, target, functions["dump"], task_defs)
            continue
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

    check_fargate(res, functions, runners, task_defs, on_ecs)
    check_dashboard(res, databases)

    packaging = "dump and verify zips with the pg tools layer" if layers else "dump and verify from the image"
    print(f"deployed: {len(functions)} functions ({packaging}), {len(schedules)} schedules ({on_ecs} starting a Fargate task) and the health check, {len(task_defs)} task definitions, roles and key policy match functions.json")
    finish("deployed")


def metrics_emitted() -> dict[str, str]:
    """Metric name -> unit, as shared/src/metrics.rs defines them (the EMF the code writes)."""
    text = (ROOT / "shared" / "src" / "metrics.rs").read_text()
    # The arms of `fn name`, up to the next fn (`unit`'s arms map to units, not names).
    body = re.search(r"pub fn name\(self\)(.*?)\n    pub fn ", text, re.S)
    names = dict(re.findall(r'Metric::(\w+) => "(\w+)"', body.group(1))) if body else {}
    namespace = re.search(r'pub const NAMESPACE: &str = "(\w+)";', text)
    dimension = re.search(r'pub const DIMENSION: &str = "(\w+)";', text)
    if not names or not namespace or not dimension:
        fail("shared/src/metrics.rs: found no metric names, NAMESPACE or DIMENSION (has it changed shape?)")
        return {}
    return {"namespace": namespace.group(1), "dimension": dimension.group(1), "names": sorted(set(names.values()))}


def check_dashboard(res: list[dict], databases: set[str]) -> None:
    """The CloudWatch dashboard: for every database one row holding a widget per metric the code
    emits, each graphing exactly that metric of that database."""
    dashboards = by_key(res, "aws_cloudwatch_dashboard", "pgkeep")
    if len(dashboards) != 1:
        fail(f"expected one CloudWatch dashboard, found {len(dashboards)}")
        return
    emitted = metrics_emitted()
    if not emitted:
        return
    widgets = json.loads(next(iter(dashboards.values()))["dashboard_body"])["widgets"]
    seen: dict[str, dict[str, int]] = {}
    for w in widgets:
        for line in w.get("properties", {}).get("metrics", []):
            plain = [x for x in line if isinstance(x, str)]
            if len(plain) != 4 or plain[0] != emitted["namespace"] or plain[2] != emitted["dimension"]:
                fail(f"dashboard widget {w.get('properties', {}).get('title')!r} graphs {line}, not {emitted['namespace']}/<metric>/{emitted['dimension']}/<database>")
                continue
            if plain[1] not in emitted["names"]:
                fail(f"dashboard widget graphs {plain[1]}, which the code does not emit ({emitted['names']})")
            if plain[3] not in databases:
                fail(f"dashboard widget graphs database {plain[3]}, which is not deployed")
            seen.setdefault(plain[3], {})[plain[1]] = w["y"]
    for db in sorted(databases):
        have = seen.get(db, {})
        missing = sorted(set(emitted["names"]) - set(have))
        if missing:
            fail(f"dashboard: database {db} has no widget for {missing}")
        if len(set(have.values())) > 1:
            fail(f"dashboard: database {db}'s widgets are not one row (y = {sorted(set(have.values()))})")
    rows = {db: next(iter(v.values())) for db, v in seen.items() if v}
    if len(set(rows.values())) != len(rows):
        fail(f"dashboard: databases share a row: {rows}")
    print(f"dashboard: {len(widgets)} widgets, one row per database ({', '.join(sorted(databases))}) with {', '.join(emitted['names'])}")


TASK = SPEC["task"]
RUN_TASK_TARGET = "arn:aws:scheduler:::aws-sdk:ecs:runTask"


def task_actions() -> dict[str, list[str]]:
    """The task role's actions: the union of those of the functions whose jobs it runs."""
    out: dict[str, set[str]] = {}
    for f in TASK["runs"]:
        for group, actions in FUNCTIONS[f]["actions"].items():
            if group not in TASK["not_in_task"]:
                out.setdefault(group, set()).update(actions)
    return {g: sorted(a) for g, a in out.items()}


def task_env_names() -> list[str]:
    names = list(SPEC["common_env"])
    for f in TASK["runs"]:
        names += FUNCTIONS[f]["env"]
    return sorted(set(names))


def statement_conditions(document: str) -> dict[str, dict]:
    return {s.get("Sid", ""): s.get("Condition", {}) for s in json.loads(document)["Statement"]}


def check_run_task_schedule(key_name: str, function: str, db: str, target: dict, dump: dict, task_defs: dict) -> None:
    """A fargate database's dump or verify schedule: the Scheduler's RunTask (universal target),
    the request in ECS's JSON, the job the Lambda target would have got as PGKEEP_JOB."""
    if target["arn"] != RUN_TASK_TARGET:
        fail(f"schedule {key_name} (a fargate database) targets {target['arn']}, not {RUN_TASK_TARGET}")
        return
    request = json.loads(target["input"])
    env = dump["environment"][0]["variables"]
    want = {
        "Cluster": env.get("PGKEEP_FARGATE_CLUSTER"),
        "TaskDefinition": json.loads(env.get("PGKEEP_FARGATE_TASK_DEFINITIONS", "{}")).get(db),
        "LaunchType": "FARGATE",
        "Count": 1,
        "StartedBy": "pgkeep",
        "NetworkConfiguration": {"AwsvpcConfiguration": {
            "Subnets": dump["vpc_config"][0]["subnet_ids"],
            "SecurityGroups": dump["vpc_config"][0]["security_group_ids"],
            "AssignPublicIp": "DISABLED",
        }},
    }
    for k, v in want.items():
        got = request.get(k)
        if k == "NetworkConfiguration" and got:
            got = {"AwsvpcConfiguration": {**got["AwsvpcConfiguration"],
                                           "Subnets": sorted(got["AwsvpcConfiguration"]["Subnets"]),
                                           "SecurityGroups": sorted(got["AwsvpcConfiguration"]["SecurityGroups"])}}
            v = {"AwsvpcConfiguration": {**v["AwsvpcConfiguration"], "Subnets": sorted(v["AwsvpcConfiguration"]["Subnets"]),
                                         "SecurityGroups": sorted(v["AwsvpcConfiguration"]["SecurityGroups"])}}
        if got != v:
            fail(f"schedule {key_name}: RunTask {k} is {got!r}, expected {v!r}")
    if db not in task_defs:
        fail(f"schedule {key_name}: database {db} has no task definition")
    overrides = request.get("Overrides", {}).get("ContainerOverrides", [])
    if [o.get("Name") for o in overrides] != ["pgkeep"]:
        fail(f"schedule {key_name}: container overrides {overrides}")
        return
    job_env = {e["Name"]: e["Value"] for e in overrides[0].get("Environment", [])}
    if set(job_env) != {"PGKEEP_JOB"}:
        fail(f"schedule {key_name}: the override sets {sorted(job_env)}, expected only PGKEEP_JOB")
        return
    job = json.loads(job_env["PGKEEP_JOB"])
    event = job.get("event", {})
    if job.get("function") != function or set(job) != {"function", "event"}:
        fail(f"schedule {key_name}: PGKEEP_JOB is {job}, expected function {function} and its event")
    if event.get("detail", {}).get("database") != db or event.get("detail-type") != "Scheduled Event":
        fail(f"schedule {key_name}: the job's event is not the scheduled event of {db}: {event}")
    # The Scheduler fills in its context attributes only where they stand literally.
    if "<aws.scheduler.execution-id>" not in target["input"] or event.get("id") != "<aws.scheduler.execution-id>":
        fail(f"schedule {key_name}: the job's event id is not the Scheduler's execution id placeholder")


def check_fargate(res: list[dict], functions: dict, runners: dict, task_defs: dict, on_ecs: int) -> None:
    """The Fargate job: one task definition per fargate/auto database, running `pgkeep job` from
    the functions' image with their environment; its two roles exactly as functions.json's task
    says; the Scheduler's and the functions' right to start it; the task-stopped rule."""
    want_dbs = {db for db, r in runners.items() if r != "lambda"}
    if set(task_defs) != want_dbs:
        fail(f"task definitions for {sorted(task_defs)}, expected one per fargate/auto database {sorted(want_dbs)}")
    others = {
        "cluster": by_key(res, "aws_ecs_cluster", "pgkeep"),
        "task role": by_key(res, "aws_iam_role", "task"),
        "execution role": by_key(res, "aws_iam_role", "task_execution"),
        "task log group": by_key(res, "aws_cloudwatch_log_group", "task"),
        "task secret": by_key(res, "aws_secretsmanager_secret", "task"),
        "task-stopped rule": by_key(res, "aws_cloudwatch_event_rule", "task_stopped"),
        "task-stopped target": by_key(res, "aws_cloudwatch_event_target", "task_stopped"),
        "task-stopped permission": by_key(res, "aws_lambda_permission", "task_stopped"),
    }
    if not want_dbs:
        for what, found in others.items():
            if found:
                fail(f"every database runs on Lambda, yet the stack has a {what}")
        return
    for what, found in others.items():
        if len(found) != 1:
            fail(f"expected one {what}, found {len(found)}")
            return
    one = {k: next(iter(v.values())) for k, v in others.items()}
    cluster_arn = one["cluster"]["arn"]
    dump_env = functions["dump"]["environment"][0]["variables"]
    if dump_env.get("PGKEEP_FARGATE_CLUSTER") != cluster_arn:
        fail(f"PGKEEP_FARGATE_CLUSTER is {dump_env.get('PGKEEP_FARGATE_CLUSTER')}, not the cluster {cluster_arn}")
    if {"name": "containerInsights", "value": "enabled"} not in one["cluster"]["setting"]:
        fail(f"the cluster's Container Insights is off: {one['cluster']['setting']}")
    image = functions["dump"].get("image_uri")
    secret_arn = one["task secret"]["arn"]
    for db, td in sorted(task_defs.items()):
        if td["requires_compatibilities"] != ["FARGATE"] or td["network_mode"] != "awsvpc":
            fail(f"task definition {db}: {td['requires_compatibilities']} {td['network_mode']}, expected FARGATE awsvpc")
        if td["task_role_arn"] != one["task role"]["arn"] or td["execution_role_arn"] != one["execution role"]["arn"]:
            fail(f"task definition {db}: roles {td['task_role_arn']}, {td['execution_role_arn']}")
        containers = json.loads(td["container_definitions"])
        if [c["name"] for c in containers] != ["pgkeep"]:
            fail(f"task definition {db}: containers {[c['name'] for c in containers]}, expected one named pgkeep")
            continue
        c = containers[0]
        if c.get("image") != image:
            fail(f"task definition {db}: image {c.get('image')}, the functions run {image}")
        if c.get("entryPoint") != ["/var/task/pgkeep", "job"] or c.get("command"):
            fail(f"task definition {db}: runs {c.get('entryPoint')} {c.get('command')}, expected /var/task/pgkeep job")
        env = {e["name"]: e["value"] for e in c.get("environment", [])}
        secrets = {e["name"]: e["valueFrom"] for e in c.get("secrets", [])}
        if "PGKEEP_JOB" in env or "PGKEEP_JOB" in secrets:
            fail(f"task definition {db}: sets PGKEEP_JOB, which each RunTask overrides")
        if sorted(set(env) | set(secrets)) != task_env_names() or set(env) & set(secrets):
            fail(f"task definition {db}: environment {sorted(env)} and secrets {sorted(secrets)} are not functions.json's task environment {task_env_names()}")
        if sorted(secrets) != sorted(TASK["secret_env"]):
            fail(f"task definition {db}: secrets {sorted(secrets)}, expected {TASK['secret_env']}")
        for k, v in secrets.items():
            if v != f"{secret_arn}:{k}::":
                fail(f"task definition {db}: secret {k} from {v}, expected {secret_arn}:{k}::")
        for k, v in env.items():
            if k in dump_env and dump_env[k] != v:
                fail(f"task definition {db}: {k}={v!r}, the dump function has {dump_env[k]!r} (one environment builder)")
        log = c.get("logConfiguration", {})
        if log.get("logDriver") != "awslogs" or log.get("options", {}).get("awslogs-group") != one["task log group"]["name"]:
            fail(f"task definition {db}: logs {log}")
        if not one["task log group"].get("kms_key_id"):
            fail("the task log group is not encrypted with the pgkeep key")
        if c.get("stopTimeout") != 30:
            fail(f"task definition {db}: stopTimeout {c.get('stopTimeout')}, expected 30")

    # The task role: the union of its functions' actions; the execution role: its own list.
    policies = {
        "task": (by_key(res, "aws_iam_role_policy", "task"), {sid_of(g): a for g, a in task_actions().items()}),
        "execution": (by_key(res, "aws_iam_role_policy", "task_execution"),
                      {sid_of(g): sorted(a) for g, a in TASK["execution_actions"].items()}),
    }
    for what, (found, want) in policies.items():
        if len(found) != 1:
            fail(f"expected one {what} role policy, found {len(found)}")
            continue
        got = policy_actions(next(iter(found.values()))["policy"])
        for sid in sorted(set(want) | set(got)):
            if want.get(sid) != got.get(sid):
                fail(f"{what} role: statement {sid} grants {got.get(sid)}, functions.json's task says {want.get(sid)}")

    # Who may start it, and only there: dump and verify, and the Scheduler for fargate schedules.
    fn_policies = by_key(res, "aws_iam_role_policy", "function")
    scheduler = next(iter(by_key(res, "aws_iam_role_policy", "scheduler").values()))
    holders = {f: fn_policies[f]["policy"] for f, s in FUNCTIONS.items() if "run_task" in s["actions"]}
    if on_ecs:
        holders["scheduler"] = scheduler["policy"]
    elif "RunTask" in policy_actions(scheduler["policy"]):
        fail("the Scheduler may run tasks though no schedule starts one")
    for who, document in holders.items():
        conditions = statement_conditions(document)
        run = conditions.get("RunTask") if who == "scheduler" else conditions.get(sid_of("run_task"))
        passing = conditions.get("PassTaskRoles")
        if json.dumps(run or {}).count(cluster_arn) != 1 or "ecs:cluster" not in json.dumps(run):
            fail(f"{who}: ecs:RunTask is not limited to the cluster (condition {run})")
        if "ecs-tasks.amazonaws.com" not in json.dumps(passing or {}):
            fail(f"{who}: iam:PassRole is not limited to ECS tasks (condition {passing})")
        resources = [r for s in json.loads(document)["Statement"] if s.get("Sid") in ("RunTask", "PassTaskRoles") for r in as_list(s["Resource"])]
        for db in (want_dbs if who != "scheduler" else {d for d, r in runners.items() if r == "fargate"}):
            if task_defs[db]["arn_without_revision"] not in resources:
                fail(f"{who}: may not run the task definition of {db}")
        for role in ("task role", "execution role"):
            if one[role]["arn"] not in resources:
                fail(f"{who}: may not pass the {role}")

    # A stopped task reaches the dump function.
    pattern = json.loads(one["task-stopped rule"]["event_pattern"])
    want_pattern = {"source": ["aws.ecs"], "detail-type": ["ECS Task State Change"],
                    "detail": {"lastStatus": ["STOPPED"], "clusterArn": [cluster_arn], "startedBy": ["pgkeep"]}}
    if pattern != want_pattern:
        fail(f"task-stopped rule pattern {pattern}, expected {want_pattern}")
    if one["task-stopped target"]["arn"] != functions["dump"]["arn"]:
        fail(f"task-stopped rule targets {one['task-stopped target']['arn']}, not the dump function")
    permission = one["task-stopped permission"]
    if (permission["principal"], permission["source_arn"], permission["function_name"]) != (
            "events.amazonaws.com", one["task-stopped rule"]["arn"], functions["dump"]["function_name"]):
        fail(f"the dump function's permission for the rule is {permission}")
    print(f"fargate: {len(task_defs)} task definitions ({', '.join(sorted(task_defs))}) run /var/task/pgkeep job with the functions' environment; task and execution roles match functions.json; the task-stopped rule reaches dump")


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
