"""A small model of the Bicep in infra/, parsed with pycep (the parser checkov uses), and the
invariants the deployment must keep. Each `check_*` function returns a list of violations so a
test can show both that the real templates pass and that a mutated copy is caught."""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin
from unittest import mock

from pycep import BicepParser

INFRA_DIR = Path(__file__).resolve().parents[2] / "infra"

# Built-in role definition ids (stable across tenants).
OPENAI_USER = "5e0bd9bd-7b93-4f28-af87-19fc36ad61bd"  # Cognitive Services OpenAI User
KEY_VAULT_SECRETS_USER = "4633458b-17de-408a-b874-0445c86b69e6"
COSMOS_DATA_CONTRIBUTOR = "00000000-0000-0000-0000-000000000002"  # Cosmos DB data plane
# Monitoring Metrics Publisher: Entra ID authenticated ingestion into Application Insights.
MONITORING_METRICS_PUBLISHER = "3913510d-42f4-4e42-8a64-420c390055eb"
FORBIDDEN_ROLES = {
    "8e3af657-a8ff-443c-a75c-2fe8c4bcb635": "Owner",
    "b24988ac-6180-42a0-ab88-20f7382dd24c": "Contributor",
    "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9": "User Access Administrator",
    "f58310d9-a9f6-439a-9e8d-f62e7b41a168": "Role Based Access Control Administrator",
    "25fbc0a9-bd7c-42a3-aa1a-3b75d497ee68": "Cognitive Services Contributor",
    "a001fd3d-188f-4b5d-821b-7da978bf7442": "Cognitive Services OpenAI Contributor",
    "00482a5a-887f-4fb3-b363-3b7fe8e74483": "Key Vault Administrator",
    "b86a8fe4-44ce-4948-aee5-eccb2c155cd7": "Key Vault Secrets Officer",
    "5bd9cd88-fe45-4216-938b-f97437e15450": "DocumentDB Account Contributor",
    "230815da-be43-4aae-9cb4-875f7bd000aa": "Cosmos DB Operator",
    "00000000-0000-0000-0000-000000000001": "Cosmos DB Built-in Data Reader",
}
# Every management-plane role assignment in the templates must be one of these.
ALLOWED_ROLES = {OPENAI_USER, KEY_VAULT_SECRETS_USER, MONITORING_METRICS_PUBLISHER}
# Roles that may only be assigned to the app's identity on one kind of resource:
# role -> (its name, the resource type its scope must be).
SCOPED_APP_ROLES = {
    MONITORING_METRICS_PUBLISHER: ("Monitoring Metrics Publisher", "Microsoft.Insights/components"),
}

GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

# (resource type, private link group id, private DNS zone, extra literal properties)
DATA_SERVICES: list[tuple[str, str, str, dict[str, Any]]] = [
    (
        "Microsoft.DocumentDB/databaseAccounts",
        "Sql",
        "privatelink.documents.azure.com",
        {"publicNetworkAccess": "Disabled", "disableLocalAuth": True},
    ),
    (
        "Microsoft.CognitiveServices/accounts",
        "account",
        "privatelink.openai.azure.com",
        {"publicNetworkAccess": "Disabled", "disableLocalAuth": True},
    ),
    (
        "Microsoft.KeyVault/vaults",
        "vault",
        "privatelink.vaultcore.azure.net",
        {
            "publicNetworkAccess": "Disabled",
            "enableRbacAuthorization": True,
            "enablePurgeProtection": True,
        },
    ),
]


# ---------------------------------------------------------------------------------------------
# Parsing and a minimal evaluator for the expression forms the templates use
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    """A reference to a template parameter (value unknown at analysis time)."""

    name: str


@dataclass(frozen=True)
class Ref:
    """A dotted reference such as `account.id` or `appIdentity.outputs.principalId`."""

    path: str


@dataclass
class Resource:
    file: str
    symbol: str
    type: str
    existing: bool
    conditional: bool
    body: dict[str, Any]


@dataclass
class Template:
    file: str
    raw: dict[str, Any]
    resources: list[Resource] = field(default_factory=list)

    @property
    def variables(self) -> dict[str, Any]:
        return {k: v.get("value") for k, v in (self.raw.get("variables") or {}).items()}

    @property
    def parameters(self) -> dict[str, Any]:
        return self.raw.get("parameters") or {}

    @property
    def modules(self) -> dict[str, dict[str, Any]]:
        return self.raw.get("modules") or {}

    @property
    def outputs(self) -> dict[str, Any]:
        return self.raw.get("outputs") or {}

    def evaluate(
        self, expr: Any, *, guaranteed: bool = False, bindings: Mapping[str, Any] | None = None
    ) -> Any:
        """expr's value; with bindings (parameter -> value), those parameters take these values
        and the conditions they decide (`empty(p)`, `!`, `c ? a : b`) are decided."""
        return _Evaluator(self, guaranteed, bindings).eval(expr, {})


def _unwrap(config: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Strip pycep's wrappers for `= if (...) {}` and `= [for ...: {}]`."""
    conditional = False
    while (
        isinstance(config, dict)
        and "config" in config
        and ("condition" in config or "loop_type" in config)
    ):
        conditional = conditional or config.get("condition") is not None
        config = config["config"]
    return config, conditional


def parse_texts(texts: Mapping[str, str]) -> dict[str, Template]:
    parser = BicepParser()
    model: dict[str, Template] = {}
    for name, text in texts.items():
        raw = parser.parse(text=text)
        template = Template(name, raw)
        for symbol, res in (raw.get("resources") or {}).items():
            body, conditional = _unwrap(res["config"])
            template.resources.append(
                Resource(name, symbol, res["type"], bool(res.get("existing")), conditional, body)
            )
        model[name] = template
    return model


def read_texts() -> dict[str, str]:
    return {
        str(path.relative_to(INFRA_DIR)): path.read_text(encoding="utf-8")
        for path in sorted(INFRA_DIR.rglob("*.bicep"))
    }


def load_model() -> dict[str, Template]:
    return parse_texts(read_texts())


_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class _Evaluator:
    def __init__(
        self, template: Template, guaranteed: bool, bindings: Mapping[str, Any] | None = None
    ) -> None:
        self.template = template
        self.variables = template.variables
        self.parameters = template.parameters
        self.guaranteed = guaranteed
        self.bindings = bindings

    def _interpolate(self, name: str, env: dict[str, Any]) -> str:
        value = self.eval(name, env)
        return value if isinstance(value, str) else "${" + name + "}"

    def eval(self, expr: Any, env: dict[str, Any]) -> Any:
        if isinstance(expr, str):
            if "${" in expr:
                return _INTERPOLATION.sub(lambda m: self._interpolate(m.group(1), env), expr)
            if expr in env:
                return env[expr]
            if (
                self.bindings is not None
                and expr in self.bindings
                and (expr in self.parameters or expr in self.variables)
            ):
                return self.bindings[expr]
            if expr in self.variables:
                return self.eval(self.variables[expr], env)
            if expr in self.parameters:
                return Param(expr)
            return expr
        if isinstance(expr, list):
            return [self.eval(item, env) for item in expr]
        if not isinstance(expr, dict):
            return expr
        if "loop_type" in expr and "config" in expr:
            detail = expr["loop_type"].get("detail") or {}
            items = self.eval(detail.get("array_name"), env)
            if not isinstance(items, list) or "item_name" not in detail:
                return Param("<loop>")
            return [self.eval(expr["config"], {**env, detail["item_name"]: item}) for item in items]
        if "function" in expr:
            function = expr["function"]
            args = [
                self.eval(a, env)
                for a in (function.get("parameters") or {}).values()
                if a is not None
            ]
            kind = function.get("type")
            decided = len(args) == 1 and isinstance(args[0], str | list)
            if self.bindings is not None and kind == "empty" and decided:
                return not args[0]
            if self.bindings is not None:
                done, value = _decided_function(kind, args)
                if done:
                    return value
            if kind == "concat" and all(isinstance(a, list) for a in args):
                return [x for a in args for x in a]
            if kind == "flatten" and len(args) == 1 and isinstance(args[0], list):
                return [x for a in args[0] for x in (a if isinstance(a, list) else [a])]
            return {"function": kind, "args": args}
        if "operator" in expr:
            operator = expr["operator"]
            operands = operator.get("operands") or {}
            if operator.get("type") == "property_accessor":
                path = _dotted(expr).split(".")
                base = self.eval(path[0], env)
                if isinstance(base, dict) and path[0] != base:
                    for key in path[1:]:
                        base = base.get(key) if isinstance(base, dict) else None
                    return base
                return Ref(".".join(path))
            if operator.get("type") == "minus" and isinstance(operands.get("integer_value"), int):
                return -operands["integer_value"]
            if operator.get("type") == "not" and self.bindings is not None:
                value = [self.eval(v, env) for v in operands.values()]
                if len(value) == 1 and isinstance(value[0], bool):
                    return not value[0]
            if self.bindings is not None and operator.get("type") in _DECIDED_OPERATORS:
                values = [self.eval(v, env) for v in operands.values()]
                done, value = _decided_operator(operator["type"], values)
                if done:
                    return value
            if operator.get("type") == "conditional":
                if self.bindings is not None:
                    condition = self.eval(operands.get("condition"), env)
                    if isinstance(condition, bool):
                        chosen = operands.get("true_value" if condition else "false_value")
                        return self.eval(chosen, env)
                yes = self.eval(operands.get("true_value"), env)
                no = self.eval(operands.get("false_value"), env)
                if yes == no:
                    return yes
                if isinstance(yes, list) and isinstance(no, list):
                    if self.guaranteed:
                        return [x for x in yes if x in no]
                    return yes + [x for x in no if x not in yes]
                if self.guaranteed:
                    return Param("<conditional>")
                return {"conditional": [self.eval(operands.get("condition"), env), yes, no]}
            return {
                "operator": operator.get("type"),
                "operands": [self.eval(v, env) for v in operands.values()],
            }
        return {k: self.eval(v, env) for k, v in expr.items()}


# With bindings, these functions and operators are decided when their arguments are known
# values (the expressions that pick a gateway certificate's vault and secret, for example).
_SCALAR = str | int | bool


def _decided_function(kind: Any, args: list[Any]) -> tuple[bool, Any]:
    """(True, the value) when `kind(*args)` can be computed here, else (False, None)."""
    if kind in ("trim", "to_lower", "to_upper") and len(args) == 1 and isinstance(args[0], str):
        return True, {"trim": str.strip, "to_lower": str.lower, "to_upper": str.upper}[kind](
            args[0]
        )
    if kind == "split" and len(args) == 2 and all(isinstance(a, str) for a in args):
        return True, args[0].split(args[1])
    if kind == "length" and len(args) == 1 and isinstance(args[0], str | list):
        return True, len(args[0])
    if kind == "first" and len(args) == 1 and isinstance(args[0], str | list) and args[0]:
        return True, args[0][0]
    return False, None


_DECIDED_OPERATORS = {
    "equals",
    "not_equals",
    "and",
    "or",
    "greater_than",
    "less_than",
    "index_accessor",
}


def _decided_operator(kind: str, values: list[Any]) -> tuple[bool, Any]:
    """(True, the value) when the operator applied to values can be computed here."""
    if len(values) != 2:
        return False, None
    a, b = values
    if kind == "index_accessor":
        if isinstance(a, list) and isinstance(b, int) and 0 <= b < len(a):
            return True, a[b]
        return False, None
    if kind in ("equals", "not_equals") and isinstance(a, _SCALAR) and isinstance(b, _SCALAR):
        return True, (a == b) == (kind == "equals")
    if kind in ("and", "or") and isinstance(a, bool) and isinstance(b, bool):
        return True, (a and b) if kind == "and" else (a or b)
    if kind in ("greater_than", "less_than") and isinstance(a, int) and isinstance(b, int):
        return True, a > b if kind == "greater_than" else a < b
    return False, None


def _dotted(expr: Any) -> str:
    if isinstance(expr, str):
        return expr
    if isinstance(expr, dict) and "operator" in expr:
        operator = expr["operator"]
        operands = operator.get("operands") or {}
        if operator.get("type") == "property_accessor":
            return f"{_dotted(operands.get('operand_1'))}.{_dotted(operands.get('operand_2'))}"
        if operator.get("type") == "function_accessor":
            return f"{_dotted(operands.get('operand_1'))}.{operands.get('func_name')}()"
        if operator.get("type") == "index_accessor":
            return f"{_dotted(operands.get('operand_1'))}[{operands.get('operand_2')}]"
    return json.dumps(expr, sort_keys=True, default=str)


def _walk(value: Any) -> Iterator[Any]:
    yield value
    if isinstance(value, dict):
        for v in value.values():
            yield from _walk(v)
    elif isinstance(value, list):
        for v in value:
            yield from _walk(v)


def _get(mapping: Any, path: str) -> Any:
    for key in path.split("/"):
        if not isinstance(mapping, dict):
            return None
        mapping = mapping.get(key)
    return mapping


def resources_of(model: Mapping[str, Template], rtype: str) -> list[tuple[Template, Resource]]:
    return [(t, r) for t in model.values() for r in t.resources if r.type.lower() == rtype.lower()]


# ---------------------------------------------------------------------------------------------
# Invariants
# ---------------------------------------------------------------------------------------------


def check_data_services_private(model: Mapping[str, Template]) -> list[str]:
    """Public access off, local auth off, a private endpoint, and a DNS zone linked to the VNet."""
    problems: list[str] = []
    linked = linked_dns_zones(model)
    for rtype, group_id, zone, literals in DATA_SERVICES:
        declared = [(t, r) for t, r in resources_of(model, rtype) if not r.existing]
        if not declared:
            problems.append(f"no {rtype} is declared")
        for template, res in declared:
            where = f"{template.file}:{res.symbol}"
            if res.conditional:
                problems.append(f"{where} is conditional; data services must always be deployed")
            for key, expected in literals.items():
                actual = _get(res.body, f"properties/{key}")
                if actual != expected:
                    problems.append(
                        f"{where} properties.{key} is {actual!r}, expected {expected!r}"
                    )
            if (
                rtype == "Microsoft.KeyVault/vaults"
                and _get(res.body, "properties/networkAcls/defaultAction") != "Deny"
            ):
                problems.append(f"{where} networkAcls.defaultAction must be Deny")
            if not _has_private_endpoint(template, res.symbol, group_id, zone):
                problems.append(
                    f"{where} has no unconditional private endpoint ({group_id}) "
                    f"registered in {zone}"
                )
            if zone not in linked:
                problems.append(
                    f"private DNS zone {zone} is not always created and linked to the VNet"
                )
    problems.extend(_check_private_endpoint_module(model))
    return problems


def _has_private_endpoint(template: Template, symbol: str, group_id: str, zone: str) -> bool:
    for module in template.modules.values():
        if not module["detail"]["path"].endswith("private-endpoint.bicep"):
            continue
        config, conditional = _unwrap(module["config"])
        params = config.get("params") or {}
        service = template.evaluate(params.get("serviceId"))
        zones = template.evaluate(params.get("dnsZoneNames"), guaranteed=True)
        if (
            not conditional
            and service == Ref(f"{symbol}.id")
            and template.evaluate(params.get("groupId")) == group_id
            and isinstance(zones, list)
            and zone in zones
        ):
            return True
    return False


def _check_private_endpoint_module(model: Mapping[str, Template]) -> list[str]:
    template = model.get("modules/private-endpoint.bicep")
    if template is None:
        return ["modules/private-endpoint.bicep is missing"]
    endpoints = [r for r in template.resources if r.type == "Microsoft.Network/privateEndpoints"]
    groups = [
        r
        for r in template.resources
        if r.type == "Microsoft.Network/privateEndpoints/privateDnsZoneGroups"
    ]
    problems = []
    if len(endpoints) != 1 or endpoints[0].conditional:
        problems.append(
            "private-endpoint.bicep must declare exactly one unconditional private endpoint"
        )
    elif not any(g.body.get("parent") == endpoints[0].symbol and not g.conditional for g in groups):
        problems.append(
            "private-endpoint.bicep must register the endpoint in its DNS zones "
            "(privateDnsZoneGroups)"
        )
    return problems


def linked_dns_zones(model: Mapping[str, Template]) -> set[str]:
    """Zone names that are always created with a virtualNetworkLink to the VNet."""
    linked: set[str] = set()
    for template in model.values():
        zones = {
            r.symbol: r for r in template.resources if r.type == "Microsoft.Network/privateDnsZones"
        }
        for link in template.resources:
            if (
                link.type != "Microsoft.Network/privateDnsZones/virtualNetworkLinks"
                or link.conditional
            ):
                continue
            if template.evaluate(_get(link.body, "properties/virtualNetwork/id")) is None:
                continue
            zone = zones.get(_dotted(link.body.get("parent")).split("[")[0])
            if zone is None or zone.conditional:
                continue
            zone_config = template.raw["resources"][zone.symbol]["config"]
            link_config = template.raw["resources"][link.symbol]["config"]
            if "loop_type" in zone_config:
                # The links loop over the same list as the zones (parent: zones[i]).
                same_list = "loop_type" in link_config and link_config["loop_type"]["detail"].get(
                    "array_name"
                ) == zone_config["loop_type"]["detail"].get("array_name")
                names = template.evaluate(
                    zone_config["loop_type"]["detail"]["array_name"], guaranteed=True
                )
                if same_list and isinstance(names, list):
                    linked.update(n for n in names if isinstance(n, str))
            else:
                name = template.evaluate(zone.body.get("name"))
                if isinstance(name, str):
                    linked.add(name)
    return linked


REQUIRED_FILTERS = {
    (c, s) for c in ("Hate", "Sexual", "Violence", "Selfharm") for s in ("Prompt", "Completion")
} | {
    ("Jailbreak", "Prompt"),
    ("Indirect Attack", "Prompt"),
    ("Protected Material Text", "Completion"),
    ("Protected Material Code", "Completion"),
}


def check_content_filter(model: Mapping[str, Template]) -> list[str]:
    """Every model deployment references a content filter policy that blocks every category."""
    problems: list[str] = []
    deployments = resources_of(model, "Microsoft.CognitiveServices/accounts/deployments")
    if not deployments:
        problems.append("no model deployment is declared")
    for template, res in deployments:
        where = f"{template.file}:{res.symbol}"
        policy_ref = template.evaluate(_get(res.body, "properties/raiPolicyName"))
        policies = {
            r.symbol: r
            for r in template.resources
            if r.type == "Microsoft.CognitiveServices/accounts/raiPolicies"
        }
        if not isinstance(policy_ref, Ref) or policy_ref.path.split(".")[0] not in policies:
            problems.append(
                f"{where} does not reference a raiPolicies resource of this template "
                "(raiPolicyName)"
            )
            continue
        policy = policies[policy_ref.path.split(".")[0]]
        if policy.conditional:
            problems.append(f"{template.file}:{policy.symbol} must not be conditional")
        filters = template.evaluate(_get(policy.body, "properties/contentFilters"))
        if not isinstance(filters, list):
            problems.append(f"{template.file}:{policy.symbol} contentFilters cannot be evaluated")
            continue
        active = {
            (f.get("name"), f.get("source"))
            for f in filters
            if isinstance(f, dict) and f.get("blocking") is True and f.get("enabled") is True
        }
        missing = sorted(REQUIRED_FILTERS - active)
        if missing:
            problems.append(f"{template.file}:{policy.symbol} does not block: {missing}")
    return problems


def check_roles(model: Mapping[str, Template]) -> list[str]:
    """The app identity holds exactly its three data roles; nobody gets a broad role."""
    problems: list[str] = []
    app_roles: set[str] = set()
    for template, res in resources_of(model, "Microsoft.Authorization/roleAssignments"):
        where = f"{template.file}:{res.symbol}"
        role = json.dumps(
            template.evaluate(_get(res.body, "properties/roleDefinitionId")), default=str
        )
        guids = set(GUID.findall(role))
        if len(guids) != 1:
            problems.append(f"{where} role definition is not one literal built-in role: {role}")
            continue
        (guid,) = guids
        if guid in FORBIDDEN_ROLES:
            problems.append(f"{where} assigns {FORBIDDEN_ROLES[guid]}")
        elif guid not in ALLOWED_ROLES:
            problems.append(f"{where} assigns a role outside the allowed set: {guid}")
        if template.evaluate(_get(res.body, "properties/principalId")) == Param("appPrincipalId"):
            app_roles.add(guid)
    if app_roles != ALLOWED_ROLES:
        problems.append(
            f"app identity management-plane roles are {sorted(app_roles)}, "
            f"expected {sorted(ALLOWED_ROLES)}"
        )

    problems.extend(check_cosmos_data_roles(model))
    problems.extend(check_key_vault_grants(model))
    problems.extend(check_scoped_app_roles(model))

    # In main.bicep the parameter appPrincipalId must always be the app identity, and the app
    # identity must not be handed to any other principal parameter.
    main = model.get("main.bicep")
    if main is None:
        return [*problems, "main.bicep is missing"]
    for name, module in main.modules.items():
        params = _unwrap(module["config"])[0].get("params") or {}
        for key, value in params.items():
            ref = main.evaluate(value)
            if key == "appPrincipalId" and ref != Ref("appIdentity.outputs.principalId"):
                problems.append(f"main.bicep module {name}: appPrincipalId is not the app identity")
            if key != "appPrincipalId" and "appIdentity.outputs.principalId" in json.dumps(
                value, default=str
            ) + str(ref):
                problems.append(f"main.bicep module {name}: app identity principal passed as {key}")
    return problems


# Cosmos DB data-plane actions (Azure Cosmos DB for NoSQL data plane security reference).
COSMOS_READ_METADATA = "Microsoft.DocumentDB/databaseAccounts/readMetadata"
COSMOS_CONTAINER_ACTIONS = "Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers"
COSMOS_DATA_CONTRIBUTOR_ACTIONS = {
    COSMOS_READ_METADATA,
    f"{COSMOS_CONTAINER_ACTIONS}/*",
    f"{COSMOS_CONTAINER_ACTIONS}/items/*",
}
# The audit log is append-only: storage/cosmos.py creates records, reads one back after a create
# conflict and queries them (the SDK needs executeQuery and readChangeFeed for a query).
AUDIT_CONTAINER = "audit"
AUDIT_ACTIONS = {
    COSMOS_READ_METADATA,
    f"{COSMOS_CONTAINER_ACTIONS}/items/create",
    f"{COSMOS_CONTAINER_ACTIONS}/items/read",
    f"{COSMOS_CONTAINER_ACTIONS}/executeQuery",
    f"{COSMOS_CONTAINER_ACTIONS}/readChangeFeed",
}
_COSMOS_SCOPE = re.compile(r"^\$\{account\.id\}(?:/dbs/(?P<db>[^/]+)(?:/colls/(?P<coll>[^/]+))?)?$")
_SYMBOL_TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _expanded(template: Template, res: Resource) -> list[Any]:
    """The bodies a resource declares: one, or one per item of its loop."""
    raw = (template.raw.get("resources") or {}).get(res.symbol, {}).get("config") or {}
    if isinstance(raw, dict) and "loop_type" in raw:
        bodies = template.evaluate(raw)
        return bodies if isinstance(bodies, list) else []
    return [res.body]


def _dependencies(template: Template) -> dict[str, set[str]]:
    """symbol -> the resources and modules of the template it waits for, directly or not:
    `dependsOn`, `parent` and every reference to another symbol in its body."""
    raw_resources = template.raw.get("resources") or {}
    symbols = set(raw_resources) | set(template.modules)
    direct: dict[str, set[str]] = {}
    for symbol in symbols:
        raw = raw_resources.get(symbol) or template.modules.get(symbol) or {}
        body, _ = _unwrap(raw.get("config") or {})
        found: set[str] = set()
        for value in _walk(body):
            if isinstance(value, str):
                found.update(t for t in _SYMBOL_TOKEN.findall(value) if t in symbols)
        direct[symbol] = found - {symbol}
    closure: dict[str, set[str]] = {}
    for symbol in symbols:
        seen: set[str] = set()
        todo = list(direct[symbol])
        while todo:
            current = todo.pop()
            if current not in seen:
                seen.add(current)
                todo.extend(direct.get(current, ()))
        closure[symbol] = seen
    return closure


def check_cosmos_data_roles(model: Mapping[str, Template]) -> list[str]:
    """The app identity's Cosmos DB data roles: none broader than one container (except a role
    that only reads metadata), every container covered, Built-in Data Contributor on all but the
    audit log, whose role can only create, read and query records. Role definition and
    assignment writes wait for the containers and the private endpoint and for each other, one
    at a time: Cosmos DB locks the account for each, and a parallel write fails with 412."""
    problems: list[str] = []
    covered: dict[str, list[set[str]]] = {}
    for template in model.values():
        assignments = [
            r
            for r in template.resources
            if r.type == "Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments"
        ]
        if not assignments:
            continue
        definitions = {
            r.symbol: r
            for r in template.resources
            if r.type == "Microsoft.DocumentDB/databaseAccounts/sqlRoleDefinitions"
        }
        for symbol, definition in definitions.items():
            where = f"{template.file}:{symbol}"
            if template.evaluate(_get(definition.body, "properties/type")) != "CustomRole":
                problems.append(f"{where} is not a CustomRole")
        for res in assignments:
            where = f"{template.file}:{res.symbol}"
            for body in _expanded(template, res):
                if template.evaluate(_get(body, "properties/principalId")) != Param(
                    "appPrincipalId"
                ):
                    problems.append(f"{where} assigns a Cosmos data role to another principal")
                role = template.evaluate(_get(body, "properties/roleDefinitionId"))
                text = json.dumps(role, default=str)
                actions: set[str] | None = None
                if isinstance(role, Ref) and role.path.split(".")[0] in definitions:
                    definition = definitions[role.path.split(".")[0]]
                    permissions = template.evaluate(_get(definition.body, "properties/permissions"))
                    actions = {
                        a
                        for p in (permissions if isinstance(permissions, list) else [])
                        if isinstance(p, dict)
                        for a in (p.get("dataActions") or [])
                        if isinstance(a, str)
                    }
                elif set(GUID.findall(text)) == {COSMOS_DATA_CONTRIBUTOR}:
                    actions = set(COSMOS_DATA_CONTRIBUTOR_ACTIONS)
                if actions is None:
                    problems.append(
                        f"{where} Cosmos data role is {text}, expected Built-in Data "
                        "Contributor or a role defined in the template"
                    )
                    continue
                scope = template.evaluate(_get(body, "properties/scope"))
                match = _COSMOS_SCOPE.match(scope) if isinstance(scope, str) else None
                if match is None:
                    problems.append(
                        f"{where} Cosmos data role scope {scope!r} is not the account's"
                    )
                    continue
                if match["coll"] is None:
                    if actions != {COSMOS_READ_METADATA}:
                        problems.append(
                            f"{where} grants {sorted(actions)} on {scope}: broader than a "
                            "container (only readMetadata may be granted there)"
                        )
                    continue
                covered.setdefault(match["coll"], []).append(actions)
        problems.extend(_check_role_writes_serialized(template))
        problems.extend(_check_containers_covered(template, covered))
    if not covered:
        problems.append("app identity has no Cosmos DB data role on any container")
    return problems


def _check_containers_covered(
    template: Template, covered: Mapping[str, list[set[str]]]
) -> list[str]:
    problems: list[str] = []
    names: list[Any] = []
    for res in template.resources:
        if res.type == "Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers":
            names += [template.evaluate(body.get("name")) for body in _expanded(template, res)]
    for name in names:
        granted = covered.get(name) if isinstance(name, str) else None
        if not granted:
            problems.append(f"{template.file}: the app has no data role on container {name!r}")
            continue
        if name == AUDIT_CONTAINER:
            allowed = set().union(*granted)
            if not allowed <= AUDIT_ACTIONS:
                problems.append(
                    f"{template.file}: the audit log is not append-only, the app may "
                    f"{sorted(allowed - AUDIT_ACTIONS)} there"
                )
            if not allowed >= AUDIT_ACTIONS:
                problems.append(
                    f"{template.file}: the app cannot {sorted(AUDIT_ACTIONS - allowed)} "
                    "on the audit log"
                )
        elif COSMOS_DATA_CONTRIBUTOR_ACTIONS not in granted:
            problems.append(
                f"{template.file}: container {name!r} lacks Built-in Data Contributor "
                "(the app replaces, patches and deletes items there)"
            )
    if AUDIT_CONTAINER not in names:
        problems.append(f"{template.file}: no {AUDIT_CONTAINER} container is declared")
    return problems


def _check_role_writes_serialized(template: Template) -> list[str]:
    problems: list[str] = []
    role_types = {
        "Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments",
        "Microsoft.DocumentDB/databaseAccounts/sqlRoleDefinitions",
    }
    writes = [r for r in template.resources if r.type in role_types]
    waits = _dependencies(template)
    containers = {
        r.symbol
        for r in template.resources
        if r.type == "Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers"
    }
    endpoints = {
        name
        for name, module in template.modules.items()
        if module["detail"]["path"].endswith("private-endpoint.bicep")
    }
    raw_resources = template.raw.get("resources") or {}
    for res in writes:
        where = f"{template.file}:{res.symbol}"
        if not containers <= waits[res.symbol]:
            problems.append(f"{where} does not wait for the containers (dependsOn)")
        if not endpoints <= waits[res.symbol]:
            problems.append(f"{where} does not wait for the private endpoint (dependsOn)")
        raw = raw_resources[res.symbol]
        if "loop_type" in (raw.get("config") or {}) and {
            "type": "batchSize",
            "argument": 1,
        } not in (raw.get("decorators") or []):
            problems.append(f"{where} writes its role assignments in parallel (@batchSize(1))")
    for i, a in enumerate(writes):
        for b in writes[i + 1 :]:
            if a.symbol not in waits[b.symbol] and b.symbol not in waits[a.symbol]:
                problems.append(
                    f"{template.file}: {a.symbol} and {b.symbol} may be written at the same time "
                    "(neither depends on the other)"
                )
    return problems


def check_key_vault_grants(model: Mapping[str, Template]) -> list[str]:
    """Only the app identity reads the app's vault as a whole; anyone else who gets Key Vault
    Secrets User gets it on one secret (an `existing` vaults/secrets resource)."""
    problems: list[str] = []
    for template, res in resources_of(model, "Microsoft.Authorization/roleAssignments"):
        where = f"{template.file}:{res.symbol}"
        role = json.dumps(
            template.evaluate(_get(res.body, "properties/roleDefinitionId")), default=str
        )
        if KEY_VAULT_SECRETS_USER not in GUID.findall(role):
            continue
        if template.evaluate(_get(res.body, "properties/principalId")) == Param("appPrincipalId"):
            continue
        scope = _dotted(res.body.get("scope")).split(".")[0]
        target = next((r for r in template.resources if r.symbol == scope), None)
        if target is None or target.type != "Microsoft.KeyVault/vaults/secrets":
            problems.append(
                f"{where} grants Key Vault Secrets User on {scope!r} to a principal other than "
                "the app: only one secret may be granted (scope: an existing vaults/secrets)"
            )
        elif not target.existing:
            problems.append(f"{where}: the secret it is scoped to must be an existing one")
    return problems


def check_scoped_app_roles(model: Mapping[str, Template]) -> list[str]:
    """Each role of SCOPED_APP_ROLES goes to the app's identity (a service principal) only, on a
    resource of its type declared in the same template: Monitoring Metrics Publisher on the
    Application Insights component, not on its resource group or anything else."""
    problems: list[str] = []
    granted: set[str] = set()
    for template, res in resources_of(model, "Microsoft.Authorization/roleAssignments"):
        where = f"{template.file}:{res.symbol}"
        role = json.dumps(
            template.evaluate(_get(res.body, "properties/roleDefinitionId")), default=str
        )
        for guid in set(GUID.findall(role)) & SCOPED_APP_ROLES.keys():
            name, scope_type = SCOPED_APP_ROLES[guid]
            count = len(problems)
            if template.evaluate(_get(res.body, "properties/principalId")) != Param(
                "appPrincipalId"
            ):
                problems.append(f"{where} grants {name} to a principal other than the app")
            if _get(res.body, "properties/principalType") != "ServicePrincipal":
                problems.append(f"{where} grants {name} without principalType ServicePrincipal")
            scope = _dotted(res.body.get("scope")).split(".")[0]
            target = next((r for r in template.resources if r.symbol == scope), None)
            if target is None or target.type.lower() != scope_type.lower():
                problems.append(
                    f"{where} grants {name} on {scope!r}: only on a {scope_type} resource"
                )
            if len(problems) == count:
                granted.add(guid)
    for guid in sorted(SCOPED_APP_ROLES.keys() - granted):
        name, scope_type = SCOPED_APP_ROLES[guid]
        problems.append(f"the app identity does not hold {name} on a {scope_type} resource")
    return problems


# The app setting by which the Azure Monitor exporter authenticates the app's telemetry with
# Entra ID: ManagedIdentityCredential(client_id) of the app's user-assigned identity
# (azure.monitor.opentelemetry.exporter, _get_authentication_credential).
TELEMETRY_AUTHENTICATION_SETTING = "APPLICATIONINSIGHTS_AUTHENTICATION_STRING"
TELEMETRY_AUTHENTICATION = "Authorization=AAD;ClientId=${identityClientId}"


def check_keyless_telemetry(model: Mapping[str, Template]) -> list[str]:
    """The app sends telemetry as its own identity (Entra ID), and the Application Insights
    component refuses the instrumentation key, except while API Management is deployed: its
    logger sends with the key, so local authentication must then stay on."""
    problems: list[str] = []
    settings = app_settings(model, guaranteed=True)
    value = settings.get(TELEMETRY_AUTHENTICATION_SETTING)
    if value != TELEMETRY_AUTHENTICATION:
        problems.append(
            f"app setting {TELEMETRY_AUTHENTICATION_SETTING} must be "
            f"{TELEMETRY_AUTHENTICATION!r} in every variant, not {value!r}"
        )
    main = model.get("main.bicep")
    if main is None:
        return [*problems, "main.bicep is missing"]
    app = _module(main, "modules/appservice.bicep") or {}
    if main.evaluate(app.get("identityClientId")) != Ref("appIdentity.outputs.clientId"):
        problems.append("main.bicep: the app module's identityClientId is not the app identity's")
    if main.evaluate(app.get("identityId")) != Ref("appIdentity.outputs.id"):
        problems.append("main.bicep: the app module's identityId is not the app identity")

    components = [
        (t, r) for t, r in resources_of(model, "Microsoft.Insights/components") if not r.existing
    ]
    if not components:
        problems.append("no Application Insights component is declared")
    apim = next(
        (m for m in main.modules.values() if m["detail"]["path"].endswith("modules/apim.bicep")),
        None,
    )
    for enable_apim in (False, True):
        bindings = {"enableApim": enable_apim}
        if apim is None:
            apim_deployed: Any = False
        else:
            condition = apim["config"].get("condition")
            apim_deployed = (
                True if condition is None else main.evaluate(condition, bindings=bindings)
            )
        for template, res in components:
            where = f"{template.file}:{res.symbol} (enableApim={str(enable_apim).lower()})"
            module_bindings = (
                dict(bindings)
                if template is main
                else _module_bindings(main, template.file, bindings)
            )
            for name, param in template.parameters.items():
                if name not in module_bindings and isinstance(param.get("default"), bool):
                    module_bindings[name] = param["default"]
            disabled = template.evaluate(
                _get(res.body, "properties/DisableLocalAuth"), bindings=module_bindings
            )
            if not isinstance(apim_deployed, bool) or not isinstance(disabled, bool):
                problems.append(
                    f"{where}: DisableLocalAuth ({disabled!r}) or whether API Management is "
                    f"deployed ({apim_deployed!r}) is not decided by enableApim"
                )
            elif apim_deployed and disabled:
                problems.append(
                    f"{where}: DisableLocalAuth is true while API Management, whose logger sends "
                    "with the instrumentation key, is deployed"
                )
            elif not apim_deployed and not disabled:
                problems.append(
                    f"{where}: DisableLocalAuth must be true without API Management "
                    "(Entra ID only ingestion)"
                )
    return problems


SECRET_NAME = re.compile(
    r"secret|password|passwd|connection_?string|token|credential|key(?![-_]?vault)", re.I
)
SECRET_VALUE = re.compile(
    r"\blist[A-Z]\w*|connectionstring|instrumentationkey|primarykey|secondarykey|masterkey|password|secret",
    re.I,
)


def check_outputs(model: Mapping[str, Template]) -> list[str]:
    """No output carries or names a key, secret, password or connection string."""
    problems: list[str] = []
    for template in model.values():
        for name, output in template.outputs.items():
            text = json.dumps(output.get("value"), default=str)
            if SECRET_NAME.search(name):
                problems.append(f"{template.file}: output {name} is named like a secret")
            if SECRET_VALUE.search(text):
                problems.append(
                    f"{template.file}: output {name} exposes a secret-like value: {text[:120]}"
                )
        for name, param in template.parameters.items():
            secure = any(d.get("type") == "secure" for d in param.get("decorators") or [])
            if secure and param.get("default") not in (None, ""):
                problems.append(f"{template.file}: secure parameter {name} has a default value")
    return problems


# Settings the platform or an SDK reads directly, not config.Settings.
PLATFORM_SETTINGS = {
    "SCM_DO_BUILD_DURING_DEPLOYMENT",
    "WEBSITES_PORT",
    "WEBSITES_CONTAINER_STOP_TIME_LIMIT",
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",  # the Azure Monitor exporter reads it
    "OVERRIDE_USE_MI_FIC_ASSERTION_CLIENTID",
}

# The names the infrastructure must set (issue 9).
REQUIRED_APP_SETTINGS = {
    "HOST",
    "PORT",
    "WEBSITES_PORT",
    "APP_WORKERS",
    "WEBCHAT_TRUSTED_ORIGINS",
    "ORGANIZATION_NAME",
    "ASSISTANT_NAME",
    "ALLOWED_TENANT_IDS",
    "ALLOWED_CHANNELS",
    "QUOTA_USER_TOKENS_PER_DAY",
    "QUOTA_USER_REQUESTS_PER_MINUTE",
    "QUOTA_TENANT_TOKENS_PER_DAY",
    "MAX_OUTPUT_TOKENS",
    "HISTORY_TOKEN_BUDGET",
    "LOG_LEVEL",
    "LOG_MESSAGE_TEXT",
    "MODEL_TIMEOUT_SECONDS",
    "MODEL_DEADLINE_SECONDS",
    "HISTORY_MAX_MESSAGES",
    "MAX_MESSAGE_CHARS",
    "ROUTER_BREAKER_FAILURES",
    "ROUTER_BREAKER_OPEN_SECONDS",
    "ROUTER_DEFAULT_COOLDOWN_SECONDS",
    "TURN_CONCURRENCY",
    "TURN_DEADLINE_SECONDS",
    "SHUTDOWN_GRACE_SECONDS",
    "DEDUPE_WINDOW",
    "ADMIN_PSEUDONYMIZE",
    "FILTER_REVIEW_SEVERITY",
    "FILTER_ERROR_POLICY",
    "USAGE_POLICY_FILE",
    "TENANT_POLICY_FILE",
    "SYSTEM_PROMPT_FILE",
    "DEPLOYMENTS_FILE",
    "MicrosoftAppId",
    "MicrosoftAppType",
    "MicrosoftAppTenantId",
    "AZURE_CLIENT_ID",
    "AZURE_OPENAI_ENDPOINT",
    "AZURE_OPENAI_DEPLOYMENT",
    "AZURE_OPENAI_MODEL",
    "AZURE_OPENAI_API_VERSION",
    "COSMOS_ENDPOINT",
    "COSMOS_DATABASE",
    "COSMOS_MESSAGES_CONTAINER",
    "COSMOS_CONVERSATIONS_CONTAINER",
    "COSMOS_BOTSTATE_CONTAINER",
    "COSMOS_USAGE_CONTAINER",
    "COSMOS_AUDIT_CONTAINER",
    "COSMOS_CREATE_CONTAINERS",
    "RETENTION_DAYS",
    "DIRECT_LINE_SECRET",
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
    "ADMIN_AUTH_MODE",
    "WEBCHAT_AUTH_MODE",
    "ADMIN_SESSION_SECRET",
    "ADMIN_PSEUDONYM_KEY",
    "ADMIN_TRUSTED_PROXY_HOPS",
    "SCM_DO_BUILD_DURING_DEPLOYMENT",
}


def web_apps(model: Mapping[str, Template]) -> list[tuple[Template, Resource]]:
    return [(t, r) for t, r in resources_of(model, "Microsoft.Web/sites") if not r.existing]


def app_settings(model: Mapping[str, Template], *, guaranteed: bool = False) -> dict[str, Any]:
    """Every app setting any deployment variant may set (with guaranteed: every variant sets),
    name -> evaluated value."""
    settings: dict[str, Any] = {}
    for template, site in web_apps(model):
        values = template.evaluate(
            _get(site.body, "properties/siteConfig/appSettings"), guaranteed=guaranteed
        )
        if not isinstance(values, list):
            raise AssertionError(f"{template.file}:{site.symbol} appSettings cannot be evaluated")
        for item in values:
            settings[item["name"]] = item.get("value")
    return settings


def check_app_settings(model: Mapping[str, Template], known_names: set[str]) -> list[str]:
    problems: list[str] = []
    settings = app_settings(model)
    for name in sorted(settings):
        if (
            name not in known_names
            and name not in PLATFORM_SETTINGS
            and not name.startswith("WEBSITE_")
        ):
            problems.append(
                f"app setting {name} is not read by config.Settings and is no platform setting"
            )
    for name in sorted(REQUIRED_APP_SETTINGS - settings.keys()):
        problems.append(f"app setting {name} is missing")
    secret = str(settings.get("DIRECT_LINE_SECRET", ""))
    if not secret.startswith("@Microsoft.KeyVault(SecretUri="):
        problems.append("DIRECT_LINE_SECRET must be a Key Vault reference")
    for name, value in settings.items():
        if (
            name != "DIRECT_LINE_SECRET"
            and isinstance(value, str)
            and re.search(r"(?i)(password|accountkey|api-?key)=", value)
        ):
            problems.append(f"app setting {name} embeds a credential")
    if settings.get("MicrosoftAppType") != "UserAssignedMSI":
        problems.append("MicrosoftAppType must be UserAssignedMSI")
    if settings.get("COSMOS_CREATE_CONTAINERS") != "false":
        problems.append(
            "COSMOS_CREATE_CONTAINERS must be 'false' (containers are owned by the Bicep)"
        )
    return problems


# The admin sub-app's keys: app setting -> (secure parameter holding the value in main.bicep and
# keyvault.bicep, parameter naming its Key Vault secret in keyvault.bicep and appservice.bicep).
# App Service runs several instances without session affinity, so every instance must read the
# same key, and it must survive restarts and provisions (or CSRF tokens, sessions and pseudonyms
# break between instances and audited pseudonyms can no longer be revealed).
SHARED_ADMIN_KEYS = {
    "ADMIN_SESSION_SECRET": ("adminSessionSecret", "adminSessionSecretName"),
    "ADMIN_PSEUDONYM_KEY": ("adminPseudonymKey", "adminPseudonymKeyName"),
}
MIN_SHARED_KEY_LENGTH = 32  # like WEBCHAT_TOKEN_SECRET in config.py; HMAC keys of 32+ chars

# App settings named like a secret that hold none: the Application Insights connection string is
# an ingestion address and key, which Microsoft documents as not a secret (it grants no read).
# The quotas and budgets of model tokens are counts, named after tokens.
NOT_A_CREDENTIAL = {
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "QUOTA_USER_TOKENS_PER_DAY",
    "QUOTA_TENANT_TOKENS_PER_DAY",
    "MAX_OUTPUT_TOKENS",
    "HISTORY_TOKEN_BUDGET",
}

_KEY_VAULT_REFERENCE = re.compile(
    r"@Microsoft\.KeyVault\(SecretUri=\$\{(?P<vault>\w+)\.properties\.vaultUri\}"
    r"secrets/\$\{(?P<name>\w+)\}/\)"
)


def read_parameters_file() -> dict[str, Any]:
    """main.parameters.json's parameters (what azd fills in from the environment)."""
    text = (INFRA_DIR / "main.parameters.json").read_text(encoding="utf-8")
    parameters: dict[str, Any] = json.loads(text)["parameters"]
    return parameters


def _decorator(param: Mapping[str, Any], kind: str) -> Any:
    for decorator in param.get("decorators") or []:
        if decorator.get("type") == kind:
            return decorator.get("argument", True)
    return None


def _module(template: Template, path_suffix: str) -> dict[str, Any] | None:
    for module in template.modules.values():
        if module["detail"]["path"].endswith(path_suffix):
            config, _ = _unwrap(module["config"])
            params: dict[str, Any] = config.get("params") or {}
            return params
    return None


def check_shared_admin_keys(
    model: Mapping[str, Template], parameters_file: Mapping[str, Any]
) -> list[str]:
    """Every instance gets the same admin session secret and pseudonym key, from Key Vault, kept
    across provisions; no app setting holds a secret value in plain text, no output leaks one."""
    problems: list[str] = []
    main = model.get("main.bicep")
    vault_template = model.get("modules/keyvault.bicep")
    if main is None or vault_template is None:
        return ["main.bicep or modules/keyvault.bicep is missing"]
    vault_params = _module(main, "keyvault.bicep") or {}
    app_params = _module(main, "appservice.bicep") or {}
    everywhere = app_settings(model, guaranteed=True)
    vaults = {
        r.symbol
        for t, r in resources_of(model, "Microsoft.KeyVault/vaults")
        if t.file == "modules/appservice.bicep" and r.existing
    }
    declared_vaults = {
        r.symbol
        for r in vault_template.resources
        if r.type == "Microsoft.KeyVault/vaults" and not r.existing
    }
    for setting, (value_param, name_param) in SHARED_ADMIN_KEYS.items():
        # 1. The app setting is a Key Vault reference to the secret named by name_param,
        #    set in every deployment variant.
        value = everywhere.get(setting)
        match = _KEY_VAULT_REFERENCE.fullmatch(value) if isinstance(value, str) else None
        if setting not in everywhere:
            problems.append(f"{setting} is not set in every deployment variant")
        elif match is None:
            problems.append(f"{setting} must be a versionless Key Vault reference, is {value!r}")
        elif match["name"] != name_param or match["vault"] not in vaults:
            problems.append(
                f"{setting} must reference secrets/${{{name_param}}} in the app's Key Vault, "
                f"references secrets/${{{match['name']}}} in {match['vault']}"
            )
        # 2. The app and keyvault.bicep name the same secret.
        app_name = main.evaluate(app_params.get(name_param))
        vault_name = main.evaluate(vault_params.get(name_param))
        if not isinstance(app_name, str) or app_name != vault_name:
            problems.append(
                f"main.bicep passes {name_param} {app_name!r} to the app but {vault_name!r} "
                "to keyvault.bicep"
            )
        # 3. keyvault.bicep always writes that secret, from the secure parameter.
        written = [
            r
            for r in vault_template.resources
            if r.type == "Microsoft.KeyVault/vaults/secrets"
            and vault_template.evaluate(r.body.get("name")) == Param(name_param)
        ]
        if len(written) != 1:
            problems.append(f"keyvault.bicep must write exactly one secret named {name_param}")
        for secret in written:
            where = f"modules/keyvault.bicep:{secret.symbol}"
            if secret.conditional or secret.existing:
                problems.append(f"{where} is not written unconditionally")
            if secret.body.get("parent") not in declared_vaults:
                problems.append(f"{where} is not a secret of the vault declared there")
            if vault_template.evaluate(_get(secret.body, "properties/value")) != Param(value_param):
                problems.append(f"{where} value is not the parameter {value_param}")
        inner = vault_template.parameters.get(value_param) or {}
        if _decorator(inner, "secure") is None:
            problems.append(f"modules/keyvault.bicep parameter {value_param} must be @secure()")
        if main.evaluate(vault_params.get(value_param)) != Param(value_param):
            problems.append(f"main.bicep must pass its parameter {value_param} to keyvault.bicep")
        # 4. main.bicep's parameter: secure, no default, generated once by azd (long enough)
        #    and then kept, so it must not come from main.parameters.json.
        param = main.parameters.get(value_param)
        if param is None:
            problems.append(f"main.bicep has no parameter {value_param}")
            continue
        if _decorator(param, "secure") is None:
            problems.append(f"main.bicep parameter {value_param} must be @secure()")
        if param.get("default") is not None:
            problems.append(
                f"main.bicep parameter {value_param} has a default: azd would not generate it"
            )
        min_length = _decorator(param, "min_length")
        if not isinstance(min_length, int) or min_length < MIN_SHARED_KEY_LENGTH:
            problems.append(
                f"main.bicep parameter {value_param} needs @minLength({MIN_SHARED_KEY_LENGTH})"
            )
        azd = (_decorator(param, "metadata") or {}).get("azd") or {}
        length = (azd.get("config") or {}).get("length")
        if azd.get("type") != "generate":
            problems.append(
                f"main.bicep parameter {value_param} needs azd metadata type 'generate'"
            )
        if not isinstance(length, int) or length < MIN_SHARED_KEY_LENGTH:
            problems.append(
                f"main.bicep parameter {value_param}: azd generates {length!r} characters, "
                f"fewer than {MIN_SHARED_KEY_LENGTH}"
            )
        if value_param in parameters_file:
            problems.append(
                f"main.parameters.json sets {value_param}: azd would take it from the "
                "environment instead of generating one value and keeping it"
            )
    # 5. No app setting holds a secret in plain text, and no output carries a secure parameter.
    for name, value in app_settings(model).items():
        plain = not (isinstance(value, str) and value.startswith("@Microsoft.KeyVault(SecretUri="))
        if SECRET_NAME.search(name) and name not in NOT_A_CREDENTIAL and plain:
            problems.append(f"app setting {name} must be a Key Vault reference")
    for template in model.values():
        secure = {n for n, p in template.parameters.items() if _decorator(p, "secure") is not None}
        for setting in app_settings({template.file: template}).values():
            text = json.dumps(setting, default=str)
            if any(re.search(rf"\b{re.escape(n)}\b", text) for n in secure):
                problems.append(f"{template.file}: an app setting holds a secure parameter")
        for out_name, output in template.outputs.items():
            text = json.dumps(output.get("value"), default=str)
            for n in sorted(secure):
                if re.search(rf"\b{re.escape(n)}\b", text):
                    problems.append(
                        f"{template.file}: output {out_name} exposes the secure parameter {n}"
                    )
    return problems


# ADMIN_PSEUDONYM_PREVIOUS_KEYS: the pseudonym keys before a rotation, which the operator gives
# (the azd variable of the same name) so that pseudonyms already in the audit log stay readable.
# A secret like the admin keys, but optional: (main.bicep's secure parameter, the parameter that
# names its Key Vault secret in keyvault.bicep and appservice.bicep, the secret's name, the value
# main.parameters.json gives the parameter).
PREVIOUS_PSEUDONYM_KEYS = (
    "ADMIN_PSEUDONYM_PREVIOUS_KEYS",
    "adminPseudonymPreviousKeys",
    "adminPseudonymPreviousKeysName",
    "admin-pseudonym-previous-keys",
    "${ADMIN_PSEUDONYM_PREVIOUS_KEYS=}",
)
# Stands for an operator's value when the templates are evaluated with one.
GIVEN_PREVIOUS_KEYS = "earlier-key-one-0123456789abcdef,earlier-key-two-0123456789abcdef"

_KEY_VAULT_REFERENCE_TO = re.compile(
    r"@Microsoft\.KeyVault\(SecretUri=\$\{(?P<vault>\w+)\.properties\.vaultUri\}"
    r"secrets/(?P<name>[A-Za-z0-9-]+)/\)"
)


def _module_bindings(
    main: Template, path_suffix: str, bindings: Mapping[str, Any]
) -> dict[str, Any]:
    """The values main.bicep gives a module's parameters that bindings (main.bicep's parameter ->
    value) decide: strings, numbers and booleans; the rest stay unknown."""
    bound: dict[str, Any] = {}
    for key, expr in (_module(main, path_suffix) or {}).items():
        value = main.evaluate(expr, bindings=bindings)
        if isinstance(value, str | int | bool):
            bound[key] = value
    return bound


def _secrets_named(
    vault_template: Template, name: str, bindings: Mapping[str, Any]
) -> list[tuple[Resource, Any, Any]]:
    """keyvault.bicep's secrets of that name: (resource, whether it is written, its value)."""
    found = []
    for r in vault_template.resources:
        if r.type != "Microsoft.KeyVault/vaults/secrets" or r.existing:
            continue
        if vault_template.evaluate(r.body.get("name"), bindings=bindings) != name:
            continue
        raw = (vault_template.raw.get("resources") or {}).get(r.symbol, {}).get("config") or {}
        condition = raw.get("condition") if isinstance(raw, dict) else None
        written = (
            True if condition is None else vault_template.evaluate(condition, bindings=bindings)
        )
        value = vault_template.evaluate(_get(r.body, "properties/value"), bindings=bindings)
        found.append((r, written, value))
    return found


def check_previous_pseudonym_keys(
    model: Mapping[str, Template], parameters_file: Mapping[str, Any]
) -> list[str]:
    """The pseudonym keys before a rotation survive a provision: they come from a secure
    parameter azd fills from ADMIN_PSEUDONYM_PREVIOUS_KEYS, go to Key Vault and reach the app
    as a Key Vault reference, never as a plain app setting or an output; left empty, neither the
    secret nor the app setting is written (a reference to a missing secret would reach the app as
    its own text)."""
    setting, value_param, name_param, secret_name, from_environment = PREVIOUS_PSEUDONYM_KEYS
    problems: list[str] = []
    main = model.get("main.bicep")
    vault_template = model.get("modules/keyvault.bicep")
    app = model.get("modules/appservice.bicep")
    if main is None or vault_template is None or app is None:
        return ["main.bicep, modules/keyvault.bicep or modules/appservice.bicep is missing"]
    # 1. An optional secret: secure, empty by default, filled by azd from the variable.
    param = main.parameters.get(value_param)
    if param is None:
        return [f"main.bicep has no parameter {value_param}"]
    if _decorator(param, "secure") is None:
        problems.append(f"main.bicep parameter {value_param} must be @secure()")
    if param.get("type") != "string" or param.get("default") != "":
        problems.append(f"main.bicep needs `param {value_param} string = ''` (optional)")
    actual = (parameters_file.get(value_param) or {}).get("value")
    if actual != from_environment:
        problems.append(
            f"main.parameters.json sets {value_param} to {actual!r}, expected {from_environment!r}"
        )
    inner = vault_template.parameters.get(value_param)
    if inner is None or _decorator(inner, "secure") is None:
        problems.append(f"modules/keyvault.bicep parameter {value_param} must be @secure()")
    if name_param not in app.parameters:
        problems.append(f"modules/appservice.bicep has no parameter {name_param}")
    declared_vaults = {
        r.symbol
        for r in vault_template.resources
        if r.type == "Microsoft.KeyVault/vaults" and not r.existing
    }
    app_vaults = {r.symbol for r in app.resources if r.type == "Microsoft.KeyVault/vaults"}
    sites = web_apps({app.file: app})
    if len(sites) != 1:
        return [*problems, f"modules/appservice.bicep declares {len(sites)} web apps, not one"]
    app_settings_expr = _get(sites[0][1].body, "properties/siteConfig/appSettings")

    def settings_of(bindings: Mapping[str, Any], *, guaranteed: bool) -> dict[str, Any]:
        values = app.evaluate(app_settings_expr, guaranteed=guaranteed, bindings=bindings)
        if not isinstance(values, list):
            raise AssertionError("appservice.bicep's appSettings cannot be evaluated")
        return {item["name"]: item.get("value") for item in values}

    for given in ("", GIVEN_PREVIOUS_KEYS):
        main_bindings = {value_param: given}
        vault_bindings = _module_bindings(main, "keyvault.bicep", main_bindings)
        app_bindings = _module_bindings(main, "appservice.bicep", main_bindings)
        secrets = _secrets_named(vault_template, secret_name, vault_bindings)
        possible = settings_of(app_bindings, guaranteed=False)
        if not given:
            # 2. Empty: no secret and no app setting, in any deployment variant.
            for secret, written, _ in secrets:
                if written is not False:
                    problems.append(
                        f"modules/keyvault.bicep:{secret.symbol} is written without earlier keys"
                    )
            if setting in possible:
                problems.append(f"{setting} is set without earlier keys: {possible[setting]!r}")
            continue
        # 3. Given: keyvault.bicep writes them as the secret, from the parameter.
        if len(secrets) != 1:
            problems.append(
                f"keyvault.bicep writes {len(secrets)} secrets named {secret_name!r}, not one"
            )
        for secret, written, value in secrets:
            where = f"modules/keyvault.bicep:{secret.symbol}"
            if written is not True:
                problems.append(f"{where} is not written when earlier keys are given")
            if secret.body.get("parent") not in declared_vaults:
                problems.append(f"{where} is not a secret of the vault declared there")
            if value != given:
                problems.append(f"{where} value is not main.bicep's parameter {value_param}")
        # 4. ... and the app reads that secret through a versionless reference, in every variant.
        everywhere = settings_of(app_bindings, guaranteed=True)
        value = everywhere.get(setting)
        match = _KEY_VAULT_REFERENCE_TO.fullmatch(value) if isinstance(value, str) else None
        if setting not in everywhere:
            problems.append(f"{setting} is not set in every deployment variant when keys are given")
        elif match is None:
            problems.append(f"{setting} must be a versionless Key Vault reference, is {value!r}")
        elif match["name"] != secret_name or match["vault"] not in app_vaults:
            problems.append(
                f"{setting} must reference secrets/{secret_name} in the app's Key Vault, "
                f"references secrets/{match['name']} in {match['vault']}"
            )
        # 5. The keys appear in no app setting and no output.
        for name, setting_value in possible.items():
            if GIVEN_PREVIOUS_KEYS in json.dumps(setting_value, default=str):
                problems.append(f"app setting {name} holds {value_param} in plain text")
        for template, bindings in (
            (main, main_bindings),
            (vault_template, vault_bindings),
            (app, app_bindings),
        ):
            for out_name, output in template.outputs.items():
                text = json.dumps(
                    template.evaluate(output.get("value"), bindings=bindings), default=str
                )
                if GIVEN_PREVIOUS_KEYS in text or re.search(rf"\b{value_param}\b", text):
                    problems.append(f"{template.file}: output {out_name} exposes {value_param}")
    return problems


# The deployment the app calls (AZURE_OPENAI_DEPLOYMENT) and its model (AZURE_OPENAI_MODEL, by
# which chat/tokens.py picks the tokenizer: the longest model family in chat/models.yaml that
# the name starts with, else a default encoding) are one entry of modelDeployments, the first.
# Its `model` is what openai.bicep deploys as the model's name (the version is another field).
FIRST_DEPLOYMENT_FIELDS = {"openAiDeployment": "name", "openAiModel": "model"}


def _first_of(expr: Any) -> tuple[Any, Any]:
    """(array, property) of a raw `first(array).property` expression, else (None, None)."""
    function = expr.get("function") if isinstance(expr, dict) else None
    if not isinstance(function, dict) or function.get("type") != "first":
        return None, None
    args = list((function.get("parameters") or {}).values())
    return (args[0] if len(args) == 1 else None), function.get("property_name")


def check_model_setting(
    model: Mapping[str, Template], family_of: Callable[[str], str] | None = None
) -> list[str]:
    """AZURE_OPENAI_MODEL is the model of the deployment in AZURE_OPENAI_DEPLOYMENT, in every
    variant, and (with family_of, model name -> chat/models.yaml family) each default model
    deployment runs a model whose tokenizer the app knows."""
    problems: list[str] = []
    main = model.get("main.bicep")
    if main is None:
        return ["main.bicep is missing"]
    value = app_settings(model, guaranteed=True).get("AZURE_OPENAI_MODEL", "<missing>")
    if value == "<missing>":
        problems.append("AZURE_OPENAI_MODEL is not set in every deployment variant")
    elif value != Param("openAiModel"):
        problems.append(f"AZURE_OPENAI_MODEL is {value!r}, expected the parameter openAiModel")
    app_params = _module(main, "appservice.bicep") or {}
    for param, field_name in FIRST_DEPLOYMENT_FIELDS.items():
        if _first_of(app_params.get(param)) != ("modelDeployments", field_name):
            problems.append(
                f"main.bicep passes {param}={json.dumps(app_params.get(param), default=str)}, "
                f"expected first(modelDeployments).{field_name}"
            )
    deployed = resources_of(model, "Microsoft.CognitiveServices/accounts/deployments")
    for template, res in deployed:
        name = _dotted(_get(res.body, "properties/model/name"))
        if not name.endswith(".model"):
            problems.append(
                f"{template.file}:{res.symbol} deploys {name} as the model's name, "
                "not the `model` of its modelDeployments entry"
            )
    defaults = (main.parameters.get("modelDeployments") or {}).get("default")
    if not isinstance(defaults, list) or not defaults:
        problems.append("main.bicep's modelDeployments has no default deployments")
        defaults = []
    for entry in defaults:
        name = entry.get("model") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not name:
            problems.append(f"modelDeployments entry {entry!r} names no model")
        elif family_of is not None and family_of(name) == "default":
            problems.append(
                f"modelDeployments: model {name!r} is no model family of chat/models.yaml, "
                "so the app would count its tokens with the default encoding"
            )
    return problems


# The sign-in modes the parameters allow, in main.bicep (where empty chooses by authClientId) and
# appservice.bicep: each must be one config.py starts with, given the app settings the templates
# write. config.py's `oidc` admin mode needs ADMIN_OIDC_CLIENT_ID (and ADMIN_OIDC_TENANT_ID),
# which the templates do not write, so the parameters leave it out (docs/deploy.md says why).
AUTH_MODE_PARAMETERS = {"ADMIN_AUTH_MODE": "adminAuthMode", "WEBCHAT_AUTH_MODE": "webchatAuthMode"}


def _mode_refusal(
    settings_cls: Any, setting: str, mode: str, written: Mapping[str, Any]
) -> str | None:
    """Why config.Settings refuses `setting=mode` next to the ADMIN_OIDC_* settings the templates
    write (placeholders stand for their values), with nothing else set; None if it starts."""
    read = {info.alias or name.upper() for name, info in settings_cls.model_fields.items()}
    environment = {k: v for k, v in os.environ.items() if k.upper() not in read}
    environment.update({n: "placeholder" for n in written if n.startswith("ADMIN_OIDC_")})
    environment[setting] = mode
    with mock.patch.dict(os.environ, environment, clear=True):
        try:
            settings_cls(_env_file=None)
        except ValueError as exc:  # pydantic's ValidationError
            errors = getattr(exc, "errors", None)
            return str(errors()[0]["msg"]) if callable(errors) else str(exc)
    return None


def _outcomes(template: Template, value: Any) -> set[str]:
    """The strings an evaluated expression can be: each branch of a conditional, each value a
    parameter allows; '<any>' for what cannot be told."""
    if isinstance(value, str):
        return {value}
    if isinstance(value, dict) and "conditional" in value:
        return _outcomes(template, value["conditional"][1]) | _outcomes(
            template, value["conditional"][2]
        )
    if isinstance(value, Param):
        allowed = _decorator(template.parameters.get(value.name) or {}, "allowed")
        return {str(v) for v in allowed} if isinstance(allowed, list) else {"<any>"}
    return {"<any>"}


def check_auth_modes(model: Mapping[str, Template], settings_cls: Any) -> list[str]:
    """Every sign-in mode a parameter allows is one the app starts with as deployed: a mode the
    templates cannot complete fails the provision, before anything changes, not the app. What
    main.bicep passes to the app is a mode appservice.bicep allows."""
    problems: list[str] = []
    written = app_settings(model)
    main, app = model.get("main.bicep"), model.get("modules/appservice.bicep")
    if main is None or app is None:
        return ["main.bicep or modules/appservice.bicep is missing"]
    app_params = _module(main, "appservice.bicep") or {}
    for param in AUTH_MODE_PARAMETERS.values():
        passed = _outcomes(main, main.evaluate(app_params.get(param)))
        allowed = _decorator(app.parameters.get(param) or {}, "allowed")
        outside = sorted(passed - set(allowed if isinstance(allowed, list) else []))
        if outside:
            problems.append(
                f"main.bicep passes {param} that can be {outside}, which appservice.bicep does "
                f"not allow: {json.dumps(app_params.get(param), default=str)}"
            )
    for setting, param in AUTH_MODE_PARAMETERS.items():
        for file in OPERATOR_PARAMETER_FILES:
            declared = (model[file].parameters if file in model else {}).get(param)
            if declared is None:
                problems.append(f"{file} has no parameter {param}")
                continue
            allowed = _decorator(declared, "allowed")
            if not isinstance(allowed, list):
                problems.append(f"{file}: {param} takes any value; it needs @allowed")
                continue
            for mode in allowed:
                if mode == "" and file == "main.bicep":
                    continue  # empty: appservice with authClientId, local without
                refusal = _mode_refusal(settings_cls, setting, str(mode), written)
                if refusal is not None:
                    problems.append(
                        f"{file}: {param} allows {mode!r}, which config.py refuses with the app "
                        f"settings the templates write: {refusal}"
                    )
    return problems


def check_appservice_mode_needs_its_authentication(model: Mapping[str, Template]) -> list[str]:
    """The appservice sign-in modes trust the X-MS-CLIENT-PRINCIPAL headers, which only App
    Service Authentication sets (and strips from clients); the templates configure it only with
    authClientId. So each mode main.bicep passes is `local` whenever authClientId is empty:
    `(... || empty(authClientId)) ? 'local' : 'appservice'`."""
    main = model.get("main.bicep")
    app_params = _module(main, "appservice.bicep") if main is not None else None
    if main is None or app_params is None:
        return ["main.bicep or its appservice module is missing"]
    without_client = {"function": "empty", "args": [Param("authClientId")]}
    problems: list[str] = []
    for param in AUTH_MODE_PARAMETERS.values():
        value = main.evaluate(app_params.get(param))
        branches = value.get("conditional") if isinstance(value, dict) else None
        condition = branches[0] if isinstance(branches, list) else None
        forced_local = (
            isinstance(condition, dict)
            and condition.get("operator") == "or"
            and without_client in condition.get("operands", [])
            and branches is not None
            and branches[1] == "local"
        )
        if not forced_local:
            problems.append(
                f"main.bicep passes {param} that can be appservice without authClientId: "
                f"{json.dumps(value, default=str)}"
            )
    return problems


def check_trusted_proxy_hops(model: Mapping[str, Template]) -> list[str]:
    """Proxies appending to X-Forwarded-For in front of the app: App Service's front end, and the
    Application Gateway too when it fronts the app."""
    value = app_settings(model).get("ADMIN_TRUSTED_PROXY_HOPS")
    expected = {"conditional": [Param("behindAppGateway"), "2", "1"]}
    if value != expected:
        return [
            "ADMIN_TRUSTED_PROXY_HOPS must be behindAppGateway ? '2' : '1', "
            f"is {json.dumps(value, default=str)}"
        ]
    return []


def check_web_app_hardening(model: Mapping[str, Template]) -> list[str]:
    problems: list[str] = []
    expected = {
        "properties/httpsOnly": True,
        "properties/siteConfig/minTlsVersion": "1.2",
        "properties/siteConfig/ftpsState": "Disabled",
        "properties/siteConfig/vnetRouteAllEnabled": True,
        "properties/siteConfig/healthCheckPath": "/healthz",
        "properties/siteConfig/appCommandLine": "python app.py",
        "properties/siteConfig/linuxFxVersion": "PYTHON|3.11",
        "properties/siteConfig/ipSecurityRestrictionsDefaultAction": "Deny",
        "properties/siteConfig/scmIpSecurityRestrictionsDefaultAction": "Deny",
        "identity/type": "UserAssigned",
    }
    sites = web_apps(model)
    if len(sites) != 1:
        problems.append(f"expected one web app, found {len(sites)}")
    for template, site in sites:
        for path, value in expected.items():
            actual = _get(site.body, path)
            if actual != value:
                problems.append(
                    f"{template.file}:{site.symbol} {path} is {actual!r}, expected {value!r}"
                )
        if not _get(site.body, "properties/virtualNetworkSubnetId"):
            problems.append(f"{template.file}:{site.symbol} is not VNet integrated")
        rules = json.dumps(
            template.evaluate(_get(site.body, "properties/siteConfig/ipSecurityRestrictions")),
            default=str,
        )
        if "AzureBotService" not in rules:
            problems.append(
                f"{template.file}:{site.symbol} does not admit the AzureBotService service tag"
            )
        policies = {
            r.body.get("name"): _get(r.body, "properties/allow")
            for r in template.resources
            if r.type == "Microsoft.Web/sites/basicPublishingCredentialsPolicies"
            and r.body.get("parent") == site.symbol
        }
        if policies != {"ftp": False, "scm": False}:
            problems.append(
                f"{template.file}:{site.symbol} basic publishing credentials must be off "
                f"for ftp and scm: {policies}"
            )
    return problems


# Composite indexes the admin lists' keyset cursors need (storage/cosmos.py CONTAINER_SPECS).
EXPECTED_COMPOSITES = {
    "conversations": [[("/lastActivityAt", "descending"), ("/id", "descending")]],
    "audit": [[("/at", "descending"), ("/id", "descending")]],
}
EXPECTED_CONTAINERS = {
    "messages": "/conversationId",
    "conversations": "/userId",
    "botstate": "/id",
    "usage": "/scope",
    "audit": "/day",
}


def check_cosmos_containers(model: Mapping[str, Template]) -> list[str]:
    problems: list[str] = []
    found: dict[str, Any] = {}
    ttl: dict[str, Any] = {}
    composites: dict[str, Any] = {}
    for template, res in resources_of(
        model, "Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers"
    ):
        loop = template.raw["resources"][res.symbol]["config"]
        bodies = template.evaluate(loop) if "loop_type" in loop else [template.evaluate(res.body)]
        for body in bodies if isinstance(bodies, list) else []:
            name = _get(body, "properties/resource/id")
            found[name] = _get(body, "properties/resource/partitionKey/paths")
            ttl[name] = _get(body, "properties/resource/defaultTtl")
            composites[name] = [
                [(c.get("path"), c.get("order")) for c in group]
                for group in _get(body, "properties/resource/indexingPolicy/compositeIndexes") or []
            ]
    for name, key in EXPECTED_CONTAINERS.items():
        if found.get(name) != [key]:
            problems.append(
                f"container {name} partition key is {found.get(name)!r}, expected [{key!r}]"
            )
    for name, expected in EXPECTED_COMPOSITES.items():
        if composites.get(name) != expected:
            problems.append(f"container {name} composite indexes are {composites.get(name)!r}")
    if ttl.get("usage") != -1:
        problems.append("container usage needs defaultTtl -1 (per-item expiry of counters)")
    if ttl.get("botstate") != -1:
        problems.append(
            "container botstate needs defaultTtl -1 (per-item expiry of a message waiting for"
            " consent)"
        )
    for template in model.values():
        if not any(r.type == "Microsoft.DocumentDB/databaseAccounts" for r in template.resources):
            continue
        retention = template.evaluate("conversationTtl")
        for name in ("messages", "conversations"):
            if ttl.get(name) != retention:
                problems.append(
                    f"container {name} defaultTtl must be the retentionDays TTL, "
                    f"is {ttl.get(name)!r}"
                )
        ttl_expr = template.variables.get("conversationTtl") or {}
        operands = _get(ttl_expr, "operator/operands") or {}
        minus_one = {"operator": {"type": "minus", "operands": {"integer_value": 1}}}
        if (
            _get(ttl_expr, "operator/type") != "conditional"
            or "retentionDays" not in json.dumps(operands.get("condition"))
            or operands.get("true_value") not in (-1, minus_one)
            or "retentionDays" not in json.dumps(operands.get("false_value"))
        ):
            problems.append(
                "conversation TTL must be (retentionDays == 0) ? -1 : retentionDays in seconds"
            )
    return problems


def check_public_url_behind_gateway(model: Mapping[str, Template]) -> list[str]:
    """Behind the Application Gateway the app sees the backend's host name: PUBLIC_BASE_URL
    must name the gateway's (the admin pages' CSRF origin check compares the browser's Origin
    with it), and only there (elsewhere the request's own host is the public one)."""
    problems: list[str] = []
    main = model.get("main.bicep")
    if main is None:
        return ["main.bicep is missing"]
    value = app_settings(model).get("PUBLIC_BASE_URL")
    if value != "https://${publicHostName}":
        problems.append(f"PUBLIC_BASE_URL must be 'https://${{publicHostName}}', is {value!r}")
    if "PUBLIC_BASE_URL" in app_settings(model, guaranteed=True):
        problems.append("PUBLIC_BASE_URL is set without the Application Gateway too")
    passed = (_module(main, "appservice.bicep") or {}).get("publicHostName")
    if passed != "appGatewayHostName":  # module params are raw expressions
        problems.append(f"main.bicep passes publicHostName={passed!r}, not appGatewayHostName")
    return problems


# App Service forwards requests to this port of the Python container.
APP_SERVICE_PORT = "8000"


def check_listen_address(model: Mapping[str, Template]) -> list[str]:
    """In every variant the app listens where App Service forwards requests: on every interface
    (config.py's default, 127.0.0.1, is unreachable from the platform, health check included) and
    on the port App Service is told about (PORT = WEBSITES_PORT)."""
    problems: list[str] = []
    settings = app_settings(model, guaranteed=True)
    expected = {
        "HOST": "0.0.0.0",  # noqa: S104 (the app setting the templates must write)
        "PORT": APP_SERVICE_PORT,
        "WEBSITES_PORT": APP_SERVICE_PORT,
    }
    for name, value in expected.items():
        if name not in settings:
            problems.append(f"{name} is not set in every deployment variant")
        elif settings[name] != value:
            problems.append(f"{name} is {settings[name]!r}, expected {value!r}")
    return problems


# App Service's longest wait after the stop signal (WEBSITES_CONTAINER_STOP_TIME_LIMIT).
APP_SERVICE_MAX_STOP_SECONDS = 120


def check_stop_time_limit(model: Mapping[str, Template], needed_margin: float) -> list[str]:
    """App Service kills the app WEBSITES_CONTAINER_STOP_TIME_LIMIT seconds after the stop signal
    (5 unless set): in every variant it must be string(min(120, shutdownGraceSeconds + margin)),
    the margin covering what the app does after the grace period (`needed_margin`)."""
    name = "WEBSITES_CONTAINER_STOP_TIME_LIMIT"
    limit = app_settings(model, guaranteed=True).get(name)
    if limit is None:
        return [f"{name} is not set in every deployment variant: App Service kills after 5 s"]
    try:
        assert limit["function"] == "string"
        [shortest] = limit["args"]
        assert shortest["function"] == "min"
        cap, total = shortest["args"]
        assert total["operator"] == "add"
        grace, margin = total["operands"]
    except (AssertionError, KeyError, TypeError, ValueError):
        return [f"{name} is {limit!r}, expected string(min(120, shutdownGraceSeconds + margin))"]
    problems = []
    if cap != APP_SERVICE_MAX_STOP_SECONDS:
        problems.append(f"{name} is capped at {cap!r}, App Service's maximum is 120")
    if grace != Param("shutdownGraceSeconds"):
        problems.append(f"{name} does not follow shutdownGraceSeconds ({grace!r})")
    # More than the app needs: App Service's kill must not race the app's own last deadline.
    if not isinstance(margin, int) or margin <= needed_margin:
        problems.append(
            f"{name} gives {margin!r} s after the grace period, more than {needed_margin:g} needed"
        )
    return problems


# Operator settings the templates carry (so that a provision, which writes the whole appSettings
# collection, does not drop them): app setting -> (main.bicep parameter, the value appservice.bicep
# gives it, main.parameters.json's value). The parameter has the same name in appservice.bicep.
OPERATOR_SETTINGS: dict[str, tuple[str, Any, str]] = {
    "APP_WORKERS": (
        "appWorkers",
        {"function": "string", "args": [Param("appWorkers")]},
        "${APP_WORKERS=1}",
    ),
    "WEBCHAT_TRUSTED_ORIGINS": (
        "webchatTrustedOrigins",
        Param("webchatTrustedOrigins"),
        "${WEBCHAT_TRUSTED_ORIGINS=}",
    ),
    "ORGANIZATION_NAME": (
        "organizationName",
        Param("organizationName"),
        "${ORGANIZATION_NAME=Contoso}",
    ),
    "ASSISTANT_NAME": (
        "assistantName",
        Param("assistantName"),
        "${ASSISTANT_NAME=Contoso Assistant}",
    ),
    "ALLOWED_TENANT_IDS": (
        "allowedTenantIds",
        Param("allowedTenantIds"),
        "${ALLOWED_TENANT_IDS=}",
    ),
    "ALLOWED_CHANNELS": (
        "allowedChannels",
        Param("allowedChannels"),
        "${ALLOWED_CHANNELS=}",
    ),
    "QUOTA_USER_TOKENS_PER_DAY": (
        "quotaUserTokensPerDay",
        {"function": "string", "args": [Param("quotaUserTokensPerDay")]},
        "${QUOTA_USER_TOKENS_PER_DAY=1000000}",
    ),
    "QUOTA_USER_REQUESTS_PER_MINUTE": (
        "quotaUserRequestsPerMinute",
        {"function": "string", "args": [Param("quotaUserRequestsPerMinute")]},
        "${QUOTA_USER_REQUESTS_PER_MINUTE=30}",
    ),
    "QUOTA_TENANT_TOKENS_PER_DAY": (
        "quotaTenantTokensPerDay",
        {"function": "string", "args": [Param("quotaTenantTokensPerDay")]},
        "${QUOTA_TENANT_TOKENS_PER_DAY=0}",
    ),
    "MAX_OUTPUT_TOKENS": (
        "maxOutputTokens",
        {"function": "string", "args": [Param("maxOutputTokens")]},
        "${MAX_OUTPUT_TOKENS=1024}",
    ),
    "HISTORY_TOKEN_BUDGET": (
        "historyTokenBudget",
        {"function": "string", "args": [Param("historyTokenBudget")]},
        "${HISTORY_TOKEN_BUDGET=6000}",
    ),
    "LOG_MESSAGE_TEXT": (
        "logMessageText",
        {"conditional": [Param("logMessageText"), "true", "false"]},
        "${LOG_MESSAGE_TEXT=false}",
    ),
    "FILTER_REVIEW_SEVERITY": (
        "filterReviewSeverity",
        {"function": "to_lower", "args": [Param("filterReviewSeverity")]},
        "${FILTER_REVIEW_SEVERITY=medium}",
    ),
    "FILTER_ERROR_POLICY": (
        "filterErrorPolicy",
        {"function": "to_lower", "args": [Param("filterErrorPolicy")]},
        "${FILTER_ERROR_POLICY=deliver}",
    ),
    "USAGE_POLICY_FILE": (
        "usagePolicyFile",
        Param("usagePolicyFile"),
        "${USAGE_POLICY_FILE=}",
    ),
    "TENANT_POLICY_FILE": (
        "tenantPolicyFile",
        Param("tenantPolicyFile"),
        "${TENANT_POLICY_FILE=}",
    ),
    "SYSTEM_PROMPT_FILE": (
        "systemPromptFile",
        Param("systemPromptFile"),
        "${SYSTEM_PROMPT_FILE=}",
    ),
    "DEPLOYMENTS_FILE": (
        "deploymentsFile",
        Param("deploymentsFile"),
        "${DEPLOYMENTS_FILE=}",
    ),
    "LOG_LEVEL": (
        "logLevel",
        {"function": "to_upper", "args": [Param("logLevel")]},
        "${LOG_LEVEL=INFO}",
    ),
    "MODEL_TIMEOUT_SECONDS": (
        "modelTimeoutSeconds",
        {"function": "string", "args": [Param("modelTimeoutSeconds")]},
        "${MODEL_TIMEOUT_SECONDS=60}",
    ),
    "MODEL_DEADLINE_SECONDS": (
        "modelDeadlineSeconds",
        {"function": "string", "args": [Param("modelDeadlineSeconds")]},
        "${MODEL_DEADLINE_SECONDS=90}",
    ),
    "HISTORY_MAX_MESSAGES": (
        "historyMaxMessages",
        {"function": "string", "args": [Param("historyMaxMessages")]},
        "${HISTORY_MAX_MESSAGES=40}",
    ),
    "MAX_MESSAGE_CHARS": (
        "maxMessageChars",
        {"function": "string", "args": [Param("maxMessageChars")]},
        "${MAX_MESSAGE_CHARS=8000}",
    ),
    "ROUTER_BREAKER_FAILURES": (
        "routerBreakerFailures",
        {"function": "string", "args": [Param("routerBreakerFailures")]},
        "${ROUTER_BREAKER_FAILURES=3}",
    ),
    "ROUTER_BREAKER_OPEN_SECONDS": (
        "routerBreakerOpenSeconds",
        {"function": "string", "args": [Param("routerBreakerOpenSeconds")]},
        "${ROUTER_BREAKER_OPEN_SECONDS=30}",
    ),
    "ROUTER_DEFAULT_COOLDOWN_SECONDS": (
        "routerDefaultCooldownSeconds",
        {"function": "string", "args": [Param("routerDefaultCooldownSeconds")]},
        "${ROUTER_DEFAULT_COOLDOWN_SECONDS=10}",
    ),
    "TURN_CONCURRENCY": (
        "turnConcurrency",
        {"function": "string", "args": [Param("turnConcurrency")]},
        "${TURN_CONCURRENCY=64}",
    ),
    "TURN_DEADLINE_SECONDS": (
        "turnDeadlineSeconds",
        {"function": "string", "args": [Param("turnDeadlineSeconds")]},
        "${TURN_DEADLINE_SECONDS=120}",
    ),
    "SHUTDOWN_GRACE_SECONDS": (
        "shutdownGraceSeconds",
        {"function": "string", "args": [Param("shutdownGraceSeconds")]},
        "${SHUTDOWN_GRACE_SECONDS=20}",
    ),
    "DEDUPE_WINDOW": (
        "dedupeWindow",
        {"function": "string", "args": [Param("dedupeWindow")]},
        "${DEDUPE_WINDOW=10000}",
    ),
    "ADMIN_PSEUDONYMIZE": (
        "adminPseudonymize",
        {"conditional": [Param("adminPseudonymize"), "true", "false"]},
        "${ADMIN_PSEUDONYMIZE=true}",
    ),
}

# The two Bicep files that declare each operator setting's parameter.
OPERATOR_PARAMETER_FILES = ("main.bicep", "modules/appservice.bicep")


def check_operator_settings(
    model: Mapping[str, Template], parameters_file: Mapping[str, Any]
) -> list[str]:
    """Each operator setting comes from a parameter that azd fills from the environment variable
    of the same name, through main.bicep, in every deployment variant."""
    problems: list[str] = []
    main = model.get("main.bicep")
    if main is None:
        return ["main.bicep is missing"]
    app_params = _module(main, "appservice.bicep") or {}
    present = app_settings(model, guaranteed=True)
    values = app_settings(model)  # a bool's `x ? 'true' : 'false'` is kept as a conditional
    for setting, (param, value, from_environment) in OPERATOR_SETTINGS.items():
        if setting not in present:
            problems.append(f"{setting} is not set in every deployment variant")
        elif values.get(setting) != value:
            problems.append(f"{setting} is {values.get(setting)!r}, expected {value!r}")
        for file in OPERATOR_PARAMETER_FILES:
            template = model.get(file)
            if template is None or param not in template.parameters:
                problems.append(f"{file} has no parameter {param}")
        if app_params.get(param) != param:  # module params are raw expressions
            problems.append(f"main.bicep passes {param}={app_params.get(param)!r} to the app")
        actual = (parameters_file.get(param) or {}).get("value")
        if actual != from_environment:
            problems.append(
                f"main.parameters.json sets {param} to {actual!r}, expected {from_environment!r}"
            )
    return problems


# A gateway certificate's secret id -> whether main.bicep grants the gateway its secret in the
# app's vault (kv-<resourceToken>), and which secret.
CERTIFICATE_TOKEN = "abc123xyz"
CERTIFICATE_CASES: dict[tuple[bool, str], tuple[bool, str | None]] = {
    (True, f"https://kv-{CERTIFICATE_TOKEN}.vault.azure.net/secrets/agw-cert"): (True, "agw-cert"),
    (True, f"https://kv-{CERTIFICATE_TOKEN}.vault.azure.net/secrets/agw-cert/0123abcd"): (
        True,
        "agw-cert",
    ),
    (True, f"https://KV-{CERTIFICATE_TOKEN.upper()}.vault.azure.cn/secrets/agw-cert"): (
        True,
        "agw-cert",
    ),
    (True, "https://kv-corp-certs.vault.azure.net/secrets/agw-cert"): (False, None),
    (True, f"https://kv-{CERTIFICATE_TOKEN}0.vault.azure.net/secrets/agw-cert"): (False, None),
    (False, f"https://kv-{CERTIFICATE_TOKEN}.vault.azure.net/secrets/agw-cert"): (False, None),
    (False, ""): (False, None),
}


def check_gateway_certificate_grant(model: Mapping[str, Template]) -> list[str]:
    """The gateway's identity reads its certificate's secret, and only that one: granted here when
    the secret id names the app's vault, not at all when it names another vault (its owner
    grants it there); and the gateway waits for the grant."""
    problems: list[str] = []
    main, vault = model.get("main.bicep"), model.get("modules/keyvault.bicep")
    if main is None or vault is None:
        return ["main.bicep or modules/keyvault.bicep is missing"]
    vaults = [r for r in vault.resources if r.type == "Microsoft.KeyVault/vaults"]
    names = [
        vault.evaluate(r.body.get("name"), bindings={"resourceToken": CERTIFICATE_TOKEN})
        for r in vaults
    ]
    if names != [f"kv-{CERTIFICATE_TOKEN}"]:
        problems.append(f"keyvault.bicep's vault is named {names!r}, main.bicep expects kv-<token>")
    readers = [
        (symbol, module)
        for symbol, module in main.modules.items()
        if module["detail"]["path"].endswith("keyvault-secret-reader.bicep")
    ]
    if len(readers) != 1:
        return [*problems, "main.bicep must grant the gateway its certificate in one module"]
    symbol, module = readers[0]
    config, _ = _unwrap(module["config"])
    condition = module["config"].get("condition")
    params = config.get("params") or {}
    if main.evaluate(params.get("vaultName")) != Ref("keyVault.outputs.name"):
        problems.append(f"main.bicep {symbol} is not about the app's vault")
    if main.evaluate(params.get("principalId")) != Ref("gatewayIdentity.outputs.principalId"):
        problems.append(f"main.bicep {symbol} does not grant the gateway's identity")
    for (gateway, secret_id), (granted, secret) in CERTIFICATE_CASES.items():
        bindings = {
            "enableAppGateway": gateway,
            "appGatewayCertificateSecretId": secret_id,
            "resourceToken": CERTIFICATE_TOKEN,
        }
        decided = True if condition is None else main.evaluate(condition, bindings=bindings)
        if decided is not granted:
            problems.append(
                f"with the gateway {'on' if gateway else 'off'} and {secret_id!r}, the grant "
                f"is {decided!r}, expected {granted!r}"
            )
        elif granted and main.evaluate(params.get("secretName"), bindings=bindings) != secret:
            problems.append(f"{secret_id!r} grants the secret {params.get('secretName')!r}")
    gateway = next(
        (m for m in main.modules.values() if m["detail"]["path"].endswith("appgateway.bicep")),
        None,
    )
    depends = (_unwrap(gateway["config"])[0].get("dependsOn") or []) if gateway else []
    if symbol not in depends:
        problems.append("the Application Gateway does not wait for its certificate's grant")
    return problems


def app_setting_text(value: Any) -> str:
    """The app setting a Bicep parameter value becomes (string(n), x ? 'true' : 'false')."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


_SUBSTITUTION = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:=(?P<default>[^}]*))?\}")


def azd_variables(parameters_file: Mapping[str, Any]) -> dict[str, tuple[str, str | None]]:
    """azd variable -> (main.bicep parameter, the default written after `=`, None without one)."""
    found: dict[str, tuple[str, str | None]] = {}
    for param, entry in parameters_file.items():
        value = entry.get("value") if isinstance(entry, dict) else None
        for match in _SUBSTITUTION.finditer(value if isinstance(value, str) else ""):
            found[match["name"]] = (param, match["default"])
    return found


def _settings_field(settings_cls: Any, alias: str) -> tuple[str, Any] | None:
    for name, info in settings_cls.model_fields.items():
        if (info.alias or name.upper()) == alias:
            return name, info
    return None


def _field_default(info: Any) -> Any:
    return info.default_factory() if info.default_factory is not None else info.default


def _bicep_default(app_default: Any) -> Any:
    """The Bicep default that stands for config.py's: a scalar as is, a float as a whole number
    (Bicep has no fractional numbers: seconds are whole seconds), a list, path or None as ''."""
    if isinstance(app_default, float):
        return int(app_default)
    return app_default if isinstance(app_default, str | int) else ""


def check_operator_defaults(
    model: Mapping[str, Template], parameters_file: Mapping[str, Any], settings_cls: Any
) -> list[str]:
    """An azd variable left unset changes nothing: main.parameters.json's default, main.bicep's
    and appservice.bicep's defaults are one value, and the app setting it becomes gives the field
    config.py's default (a scalar default is written as is, a float one as a whole number; a list,
    path or None one as '', which config.py ignores)."""
    problems: list[str] = []
    from_environment = azd_variables(parameters_file)
    for setting, (param, _, _) in OPERATOR_SETTINGS.items():
        found = _settings_field(settings_cls, setting)
        if found is None:
            problems.append(f"config.Settings reads no {setting}")
            continue
        field_name, info = found
        defaults = {
            file: (model[file].parameters.get(param) or {}).get("default", "<no default>")
            for file in OPERATOR_PARAMETER_FILES
            if file in model
        }
        bicep_default = next(iter(defaults.values()), "<no default>")
        if any(d != bicep_default or type(d) is not type(bicep_default) for d in defaults.values()):
            problems.append(f"{param} has different defaults: {defaults}")
            continue
        app_default = _field_default(info)
        if isinstance(app_default, float) and not app_default.is_integer():
            problems.append(f"config.py's {setting} default {app_default!r} is no whole number")
            continue
        expected = _bicep_default(app_default)
        if bicep_default != expected or type(bicep_default) is not type(expected):
            problems.append(
                f"{param} defaults to {bicep_default!r}; config.py's {setting} default "
                f"{app_default!r} needs {expected!r}"
            )
            continue
        text = app_setting_text(bicep_default)
        azd = from_environment.get(setting)
        if azd is None or azd[0] != param or azd[1] != text:
            problems.append(
                f"main.parameters.json must fill {param} from ${{{setting}={text}}}, has {azd!r}"
            )
        if _app_value_from_environment(settings_cls, setting, field_name, text) != app_default:
            problems.append(f"the app setting {setting}={text!r} does not give config.py's default")
    return problems


def _app_value_from_environment(settings_cls: Any, setting: str, field_name: str, text: str) -> Any:
    """What config.Settings makes of one app setting, with the other operator settings unset."""
    others = {alias for alias in OPERATOR_SETTINGS if alias != setting}
    environment = {k: v for k, v in os.environ.items() if k.upper() not in others}
    environment[setting] = text
    with mock.patch.dict(os.environ, environment, clear=True):
        return getattr(settings_cls(_env_file=None), field_name)


def _expected_bounds(setting: str, info: Any) -> list[dict[str, Any]]:
    """The @minValue/@maxValue/@allowed decorators a field's constraints call for: whole
    numbers, since Bicep has no others (a float's `gt=0` is @minValue(1))."""
    low = high = None
    for constraint in info.metadata:
        if getattr(constraint, "ge", None) is not None:
            low = math.ceil(constraint.ge)
        if getattr(constraint, "gt", None) is not None:
            low = math.floor(constraint.gt) + 1
        if getattr(constraint, "le", None) is not None:
            high = math.floor(constraint.le)
        if getattr(constraint, "lt", None) is not None:
            high = math.ceil(constraint.lt) - 1
    expected = []
    if get_origin(info.annotation) is Literal:
        expected.append({"type": "allowed", "argument": list(get_args(info.annotation))})
    if low is not None:
        expected.append({"type": "min_value", "argument": low})
    if high is not None:
        expected.append({"type": "max_value", "argument": high})
    return expected


# Bicep has no fractional numbers: a float setting (seconds) is an int parameter.
BICEP_TYPES = {bool: "bool", int: "int", float: "int"}


def check_operator_bounds(model: Mapping[str, Template], settings_cls: Any) -> list[str]:
    """Each parameter takes what config.py takes: its type, and @minValue/@maxValue/@allowed
    where the field has bounds or a fixed set of values (and nothing stricter elsewhere)."""
    problems: list[str] = []
    for setting, (param, _, _) in OPERATOR_SETTINGS.items():
        found = _settings_field(settings_cls, setting)
        if found is None:
            problems.append(f"config.Settings reads no {setting}")
            continue
        _, info = found
        expected = _expected_bounds(setting, info)
        bicep_type = BICEP_TYPES.get(info.annotation, "string")
        for file in OPERATOR_PARAMETER_FILES:
            declared = (model[file].parameters if file in model else {}).get(param)
            if declared is None:
                problems.append(f"{file} has no parameter {param}")
                continue
            if declared.get("type") != bicep_type:
                problems.append(f"{file}: {param} is {declared.get('type')}, expected {bicep_type}")
            kinds = ("allowed", "min_value", "max_value")
            actual = [d for d in declared.get("decorators") or [] if d.get("type") in kinds]
            key = {kind: i for i, kind in enumerate(kinds)}
            if sorted(actual, key=lambda d: key[d["type"]]) != expected:
                problems.append(f"{file}: {param} has {actual}, config.py's {setting} {expected}")
    return problems


# The inbound ranges reach both places that admit them (App Service access restrictions and the
# gateway subnet's NSG) from main.bicep's array parameter and from the comma-separated string azd
# fills from ALLOWED_INBOUND_CIDRS (azd substitutes strings; an array needs a JSON value that
# older azd versions cannot pass).
INBOUND_RANGES_FROM_ENVIRONMENT = ("allowedInboundCidrList", "${ALLOWED_INBOUND_CIDRS=}")


def check_inbound_ranges_from_environment(
    model: Mapping[str, Template], parameters_file: Mapping[str, Any]
) -> list[str]:
    problems: list[str] = []
    main = model.get("main.bicep")
    if main is None:
        return ["main.bicep is missing"]
    param, from_environment = INBOUND_RANGES_FROM_ENVIRONMENT
    declared = main.parameters.get(param) or {}
    if declared.get("type") != "string" or declared.get("default") != "":
        problems.append(f"main.bicep needs `param {param} string = ''`")
    actual = (parameters_file.get(param) or {}).get("value")
    if actual != from_environment:
        problems.append(
            f"main.parameters.json sets {param} to {actual!r}, expected {from_environment!r}"
        )
    combined = main.evaluate(main.variables.get("inboundCidrs"))
    parts = list(_walk(combined))
    if (
        not isinstance(combined, dict)
        or combined.get("function") != "union"
        or Param("allowedInboundCidrs") not in combined.get("args", [])
        or Param(param) not in parts
        or not any(isinstance(p, dict) and p.get("function") == "split" for p in parts)
    ):
        problems.append(
            f"main.bicep's inboundCidrs must be the union of allowedInboundCidrs and {param} "
            f"split at commas, is {json.dumps(combined, default=str)}"
        )
    for module in ("network.bicep", "appservice.bicep"):
        passed = (_module(main, module) or {}).get("allowedInboundCidrs")
        if passed != "inboundCidrs":  # module params are raw expressions
            problems.append(f"main.bicep passes allowedInboundCidrs={passed!r} to {module}")
    return problems


def check_gateway_ip_output(model: Mapping[str, Template]) -> list[str]:
    """docs/deploy.md sends operators to this output for the gateway's DNS record."""
    main = model.get("main.bicep")
    if main is None:
        return ["main.bicep is missing"]
    output = main.outputs.get("APP_GATEWAY_PUBLIC_IP")
    if output is None:
        return ["main.bicep has no output APP_GATEWAY_PUBLIC_IP"]
    value = main.evaluate(output.get("value"))
    expected = {
        "conditional": [Param("enableAppGateway"), Ref("appGateway.outputs.publicIpAddress"), ""]
    }
    if value != expected:
        return [f"APP_GATEWAY_PUBLIC_IP is {json.dumps(value, default=str)}"]
    return []


# azd deploy posts the package to the SCM (Kudu) site's /api/zipdeploy, not through ARM: the SCM
# site must admit the deployers' ranges (default deny), from main.bicep's array parameter and the
# comma-separated string azd fills from DEPLOYER_CIDRS, like the inbound ranges above.
DEPLOYER_RANGES_FROM_ENVIRONMENT = ("deployerCidrList", "${DEPLOYER_CIDRS=}")


def check_deployer_ranges(
    model: Mapping[str, Template], parameters_file: Mapping[str, Any]
) -> list[str]:
    problems: list[str] = []
    main = model.get("main.bicep")
    app = model.get("modules/appservice.bicep")
    if main is None or app is None:
        return ["main.bicep or modules/appservice.bicep is missing"]
    param, from_environment = DEPLOYER_RANGES_FROM_ENVIRONMENT
    declared = main.parameters.get(param) or {}
    if declared.get("type") != "string" or declared.get("default") != "":
        problems.append(f"main.bicep needs `param {param} string = ''`")
    for template in (main, app):
        array = template.parameters.get("deployerCidrs") or {}
        if array.get("type") != "array" or array.get("default") != []:
            problems.append(f"{template.file} needs `param deployerCidrs array = []`")
    actual = (parameters_file.get(param) or {}).get("value")
    if actual != from_environment:
        problems.append(
            f"main.parameters.json sets {param} to {actual!r}, expected {from_environment!r}"
        )
    combined = main.evaluate(main.variables.get("deployerRanges"))
    parts = list(_walk(combined))
    if (
        not isinstance(combined, dict)
        or combined.get("function") != "union"
        or Param("deployerCidrs") not in combined.get("args", [])
        or Param(param) not in parts
        or not any(isinstance(p, dict) and p.get("function") == "split" for p in parts)
    ):
        problems.append(
            f"main.bicep's deployerRanges must be the union of deployerCidrs and {param} "
            f"split at commas, is {json.dumps(combined, default=str)}"
        )
    passed = (_module(main, "appservice.bicep") or {}).get("deployerCidrs")
    if passed != "deployerRanges":  # module params are raw expressions
        problems.append(f"main.bicep passes deployerCidrs={passed!r} to appservice.bicep")
    for template, site in web_apps(model):
        where = f"{template.file}:{site.symbol}"
        config = _get(site.body, "properties/siteConfig") or {}
        if config.get("scmIpSecurityRestrictionsUseMain") is not False:
            problems.append(f"{where} scmIpSecurityRestrictionsUseMain must be false")
        rules = config.get("scmIpSecurityRestrictions")
        declared = (
            (template.raw.get("variables") or {}).get(rules) if isinstance(rules, str) else None
        )
        loop = (declared or {}).get("value") or {}
        detail = _get(loop, "loop_type/detail") or {}
        body = loop.get("config") or {}
        if (
            detail.get("array_name") != "deployerCidrs"
            or body.get("action") != "Allow"
            or body.get("ipAddress") != detail.get("item_name")
            or set(body) - {"name", "action", "ipAddress", "priority", "description"}
        ):
            problems.append(
                f"{where} scmIpSecurityRestrictions must be one Allow rule per deployerCidrs "
                f"range, is {json.dumps(rules, default=str)}"
            )
    return problems


def check_private_endpoints_in_vnet_region(model: Mapping[str, Template]) -> list[str]:
    """A private endpoint must be in its virtual network's region (learn.microsoft.com/azure/
    private-link/private-endpoint-overview): every private-endpoint.bicep module gets a location
    parameter of its template that main.bicep fills with `location`, the region it gives the VNet
    (Azure OpenAI's account may be in AZURE_OPENAI_LOCATION; its endpoint may not)."""
    problems: list[str] = []
    main = model.get("main.bicep")
    if main is None:
        return ["main.bicep is missing"]
    if (_module(main, "modules/network.bicep") or {}).get("location") != "location":
        problems.append("main.bicep must give network.bicep (the VNet) `location: location`")
    endpoints = 0
    for template in model.values():
        for symbol, module in template.modules.items():
            if not module["detail"]["path"].endswith("private-endpoint.bicep"):
                continue
            endpoints += 1
            config, _ = _unwrap(module["config"])
            location = (config.get("params") or {}).get("location")
            where = f"{template.file}:{symbol}"
            if template.file == "main.bicep":
                if location != "location":
                    problems.append(f"{where} location is {location!r}, not the VNet's")
                continue
            if not isinstance(location, str) or location not in template.parameters:
                problems.append(f"{where} location must be a parameter, is {location!r}")
                continue
            passed = (_module(main, template.file) or {}).get(location)
            if passed != "location":  # module params are raw expressions
                problems.append(
                    f"{where} location is {template.file}'s {location}, which main.bicep fills "
                    f"with {json.dumps(passed, default=str)}, not the VNet's `location`"
                )
    if not endpoints:
        problems.append("no private-endpoint.bicep module is used")
    return problems


def check_sign_in_behind_gateway(model: Mapping[str, Template]) -> list[str]:
    """Behind the Application Gateway the app sees the backend's host (the gateway picks the
    host name from the backend address); App Service Authentication must build its redirects
    from the browser's host, which the gateway sends in X-Original-Host, and only there (without
    the gateway a client could set that header)."""
    problems: list[str] = []
    gateway = model.get("modules/appgateway.bicep")
    if gateway is not None and '"pickHostNameFromBackendAddress": true' not in json.dumps(
        gateway.raw
    ):
        return problems  # the gateway keeps the host: nothing to forward
    auth = resources_of(model, "Microsoft.Web/sites/config")
    auth = [(t, r) for t, r in auth if r.body.get("name") == "authsettingsV2"]
    if len(auth) != 1:
        return [f"expected one authsettingsV2 config, found {len(auth)}"]
    template, res = auth[0]
    value = template.evaluate(_get(res.body, "properties/httpSettings/forwardProxy"))
    expected = {
        "conditional": [
            Param("behindAppGateway"),
            {"convention": "Custom", "customHostHeaderName": "X-Original-Host"},
            {"convention": "NoProxy"},
        ]
    }
    if value != expected:
        problems.append(
            "authsettingsV2 httpSettings.forwardProxy must be behindAppGateway ? "
            "{convention: 'Custom', customHostHeaderName: 'X-Original-Host'} : "
            f"{{convention: 'NoProxy'}}, is {json.dumps(value, default=str)}"
        )
    return problems


# Requests whose JSON bodies carry what people type: the gateway's WAF must let them reach the
# app (a custom Allow rule ends its evaluation), and nothing else may skip the managed rules.
CHAT_MESSAGE_PATHS = ("/api/messages", "/v3/directline/conversations/Ab3_x-9/activities")
MANAGED_RULES_PATHS = (
    "/admin/api/export",
    "/api/messages/../admin/",
    "/v3/directline/conversations/a/b/activities",
    "/v3/directline/tokens/generate",
    "/",
)


def check_gateway_waf_passes_chat_messages(model: Mapping[str, Template]) -> list[str]:
    policies = resources_of(
        model, "Microsoft.Network/ApplicationGatewayWebApplicationFirewallPolicies"
    )
    if len(policies) != 1:
        return [f"expected one WAF policy, found {len(policies)}"]
    template, policy = policies[0]
    # Literal values, read as written (the evaluator would take `operator` for an expression).
    rules = _get(policy.body, "properties/customRules") or []
    allowing = [rule for rule in rules if rule.get("action") == "Allow"]
    if len(allowing) != 1:
        return [f"{template.file}: expected one Allow rule for chat messages, found {rules}"]
    conditions = {
        condition["matchVariables"][0]["variableName"]: condition
        for condition in allowing[0].get("matchConditions") or []
    }
    problems: list[str] = []
    method = conditions.pop("RequestMethod", None)
    if method is None or method.get("operator") != "Equal" or method.get("matchValues") != ["POST"]:
        problems.append(f"{template.file}: the Allow rule is not for POST only: {method}")
    uri = conditions.pop("RequestUri", None)
    if uri is None or uri.get("operator") != "Regex" or len(uri.get("matchValues") or []) != 1:
        return [*problems, f"{template.file}: the Allow rule names no path pattern: {uri}"]
    if conditions:
        problems.append(f"{template.file}: the Allow rule has other conditions: {conditions}")
    if any(c.get("negationConditon") for c in (method or {}, uri)):
        problems.append(f"{template.file}: the Allow rule negates a condition")
    pattern = re.compile(uri["matchValues"][0])
    problems += [
        f"chat messages to {p} meet the managed rules"
        for p in CHAT_MESSAGE_PATHS
        if not pattern.search(p)
    ]
    problems += [f"{p} skips the managed rules" for p in MANAGED_RULES_PATHS if pattern.search(p)]
    return problems
