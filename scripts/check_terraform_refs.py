#!/usr/bin/env python3
"""The reference half of `terraform validate`, which cannot run here (it needs the
provider registry).

For every Terraform configuration directory (a root or a module) under TERRAFORM_DIR:
- every `var.X`, `local.X`, `data.T.N`, resource `T.N` and `module.M` reference names
  something the directory declares;
- every `module.M.O` reference names an output that module M declares;
- every module call passes each required variable of the module and no unknown one;
- every output refers only to what exists (a special case of the above);
- `var.X.attr` names an attribute of X's object type, and every .tfvars value of an
  object-typed variable has exactly the attributes the type declares (optional ones may
  be left out), at every nesting level.

Prints `ok <name>` / `not ok <name>:` lines like check_terraform_hcl.py and exits
non-zero when a reference does not resolve.

Usage: check_terraform_refs.py TERRAFORM_DIR
"""

from __future__ import annotations

import re
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import hcl2

# Arguments of a module block that are not input variables.
MODULE_META_ARGS = {"source", "version", "providers", "count", "for_each", "depends_on"}
# Reference roots that are not declared objects.
BUILTIN_ROOTS = {"each", "count", "self", "path", "terraform"}
# A resource type: provider prefix, underscore, rest (google_sql_user, random_password).
RESOURCE_TYPE = re.compile(r"^[a-z][a-z0-9]*_[a-z0-9_]+$")
TRAVERSAL = re.compile(r"(?<![\w.\-])([A-Za-z_][\w-]*)((?:\.[A-Za-z_][\w-]*|\[[^\]]*\])*)")


def unquote(value: object) -> object:
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


@dataclass
class Config:
    """What one configuration directory declares, and what it refers to."""

    path: Path
    variables: dict[str, dict] = field(default_factory=dict)
    locals: set[str] = field(default_factory=set)
    outputs: dict[str, dict] = field(default_factory=dict)
    resources: set[str] = field(default_factory=set)
    data: set[str] = field(default_factory=set)
    modules: dict[str, dict] = field(default_factory=dict)
    # names of dynamic blocks' iterators (the block label or its `iterator`)
    iterators: set[str] = field(default_factory=set)
    # (file, expression text) of every expression in the directory
    expressions: list[tuple[str, str]] = field(default_factory=list)


def expression_code(text: str) -> str:
    """The code parts of an HCL expression as python-hcl2 renders it: string literals
    are dropped, the interpolations inside them (`${...}`, `%{...}`) kept."""
    out: list[str] = []
    i, n = 0, len(text)

    def code(i: int, closing: str | None) -> int:
        depth = 0
        while i < n:
            c = text[i]
            if c == '"':
                i = string(i + 1)
                out.append(" ")
                continue
            if closing and c == "{":
                depth += 1
            elif closing and c == "}":
                if depth == 0:
                    return i + 1
                depth -= 1
            out.append(c)
            i += 1
        return i

    def string(i: int) -> int:
        while i < n:
            c = text[i]
            if c == "\\":
                i += 2
                continue
            if c == '"':
                return i + 1
            # ${ or %{ opens an interpolation; $${ and %%{ are escaped literals.
            if c in "$%" and text.startswith("{", i + 1) and not (i > 0 and text[i - 1] == c):
                out.append(" (")
                i = code(i + 2, "}")
                out.append(") ")
                continue
            i += 1
        return i

    # python-hcl2 wraps a bare expression in ${...}; a literal comes quoted.
    if text.startswith("${") and text.endswith("}"):
        code(2, "}")
    elif text.startswith('"'):
        string(1)
    else:
        return ""
    return "".join(out)


def walk_expressions(value: object, out: list[str], key: str | None = None) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            if k.startswith("__"):
                continue
            walk_expressions(v, out, k)
    elif isinstance(value, list):
        for v in value:
            walk_expressions(v, out, key)
    elif isinstance(value, str):
        out.append(value)


def dynamic_iterators(value: object, out: set[str]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            if k == "dynamic":
                for entry in v if isinstance(v, list) else [v]:
                    for label, body in entry.items():
                        out.add(str(unquote(label)))
                        if isinstance(body, dict) and "iterator" in body:
                            out.add(str(expression_code(str(body["iterator"])).strip() or unquote(body["iterator"])))
            dynamic_iterators(v, out)
    elif isinstance(value, list):
        for v in value:
            dynamic_iterators(v, out)


def labels(doc: dict, kind: str) -> list[tuple[str, dict]]:
    result = []
    for entry in doc.get(kind, []):
        for label, body in entry.items():
            result.append((str(unquote(label)), body))
    return result


def load_config(directory: Path, root: Path, errors: list[str]) -> Config:
    config = Config(directory)
    for path in sorted(directory.glob("*.tf")):
        rel = str(path.relative_to(root))
        try:
            with path.open(encoding="utf-8") as handle:
                doc = hcl2.load(handle)
        except Exception as exc:  # the parser raises several exception types
            errors.append(f"{rel}: {exc}")
            continue
        for name, body in labels(doc, "variable"):
            config.variables[name] = body
        for name, body in labels(doc, "output"):
            config.outputs[name] = body
        for name, body in labels(doc, "module"):
            config.modules[name] = body
        for entry in doc.get("locals", []):
            config.locals.update(k for k in entry if not k.startswith("__"))
        for kind, into in (("resource", config.resources), ("data", config.data)):
            for entry in doc.get(kind, []):
                for rtype, named in entry.items():
                    for rname in named:
                        into.add(f"{unquote(rtype)}.{unquote(rname)}")
        dynamic_iterators(doc, config.iterators)
        # Every attribute value in the file is an expression; block labels and
        # attribute names are not.
        values: list[str] = []
        for kind, entries in doc.items():
            if kind in ("terraform",):
                continue
            walk_expressions(entries, values)
        config.expressions.extend((rel, v) for v in values)
    return config


# --- variable types --------------------------------------------------------------------

TYPE_TOKEN = re.compile(r"\s*([A-Za-z_][\w-]*|\"(?:[^\"\\]|\\.)*\"|-?\d+(?:\.\d+)?|[(){}\[\],=])")


def parse_type(text: str):
    """A Terraform type constraint as nested tuples: ("object", {attr: (type, optional)}),
    ("list"|"set"|"map", element), ("tuple", [types]), or a primitive name. None when the
    text is not a type this parser knows (the caller then checks nothing)."""
    text = text.strip()
    if text.startswith("${") and text.endswith("}"):
        text = text[2:-1]
    tokens = TYPE_TOKEN.findall(text)
    pos = 0

    def peek():
        return tokens[pos] if pos < len(tokens) else ""

    def take(expected=None):
        nonlocal pos
        tok = peek()
        if expected is not None and tok != expected:
            raise ValueError(f"expected {expected!r}, got {tok!r}")
        pos += 1
        return tok

    def skip_value():
        depth = 0
        while pos < len(tokens):
            tok = peek()
            if tok in "([{":
                depth += 1
            elif tok in ")]}":
                if depth == 0:
                    return
                depth -= 1
            elif tok == "," and depth == 0:
                return
            take()

    def typ():
        name = take()
        if name in ("string", "number", "bool", "any"):
            return name
        if name in ("list", "set", "map"):
            take("(")
            inner = typ()
            take(")")
            return (name, inner)
        if name == "tuple":
            take("(")
            take("[")
            items = []
            while peek() != "]":
                items.append(typ())
                if peek() == ",":
                    take()
            take("]")
            take(")")
            return ("tuple", items)
        if name == "object":
            take("(")
            take("{")
            attrs = {}
            while peek() != "}":
                attr = take().strip('"')
                take("=")
                optional = False
                if peek() == "optional":
                    take()
                    take("(")
                    inner = typ()
                    if peek() == ",":
                        take()
                        skip_value()
                    take(")")
                    optional = True
                else:
                    inner = typ()
                attrs[attr] = (inner, optional)
                if peek() == ",":
                    take()
            take("}")
            take(")")
            return ("object", attrs)
        raise ValueError(f"unknown type {name!r}")

    try:
        result = typ()
    except (ValueError, IndexError):
        return None
    return result if pos == len(tokens) else None


def attribute_problem(vtype, path: list[str], var: str) -> str | None:
    """Why var.<var>.<path...> names no attribute of the type, or None."""
    for index, attr in enumerate(path):
        while isinstance(vtype, tuple) and vtype[0] in ("list", "set", "map"):
            vtype = vtype[1]  # an index was stripped from the reference
        if not isinstance(vtype, tuple) or vtype[0] != "object":
            return None
        if attr not in vtype[1]:
            where = ".".join([var] + path[:index])
            return f"var.{where} has no attribute {attr!r} (its type declares {', '.join(sorted(vtype[1]))})"
        vtype = vtype[1][attr][0]
    return None


def value_problems(vtype, value, where: str) -> list[str]:
    """Attributes of a .tfvars value that its object type does not declare, or misses."""
    if isinstance(vtype, tuple) and vtype[0] == "object" and isinstance(value, dict):
        attrs = vtype[1]
        given = {str(k).strip('"') for k in value if not str(k).startswith("__")}
        out = [f"{where}: {key!r} is not an attribute of the variable's type" for key in sorted(given - set(attrs))]
        out += [f"{where}: required attribute {key!r} is missing" for key, (_, optional) in sorted(attrs.items())
                if not optional and key not in given]
        for key in sorted(given & set(attrs)):
            raw = value.get(key, value.get(f'"{key}"'))
            out += value_problems(attrs[key][0], raw, f"{where}.{key}")
        return out
    if isinstance(vtype, tuple) and vtype[0] in ("list", "set") and isinstance(value, list):
        return [p for i, item in enumerate(value) for p in value_problems(vtype[1], item, f"{where}[{i}]")]
    if isinstance(vtype, tuple) and vtype[0] == "map" and isinstance(value, dict):
        return [p for k, item in value.items() if not str(k).startswith("__")
                for p in value_problems(vtype[1], item, f"{where}[{k}]")]
    return []


def references(code: str) -> list[list[str]]:
    """Traversals (root, attr, attr...) in the code of one expression."""
    found = []
    for match in TRAVERSAL.finditer(code):
        root, rest = match.group(1), match.group(2)
        parts = [root] + [p for p in re.findall(r"\.([A-Za-z_][\w-]*)", re.sub(r"\[[^\]]*\]", "", rest))]
        # a function call: name(
        after = code[match.end() : match.end() + 1]
        if after == "(" and len(parts) == 1:
            continue
        found.append(parts)
    return found


def check_config(config: Config, root: Path, configs: dict[Path, Config]) -> list[str]:
    problems: set[str] = set()
    where = config.path.relative_to(root)
    for rel, text in config.expressions:
        code = expression_code(text)
        # for-expression variables: `for k, v in ...`
        bound = set(config.iterators)
        for match in re.finditer(r"\bfor\s+([A-Za-z_]\w*)(?:\s*,\s*([A-Za-z_]\w*))?\s+in\b", code):
            bound.update(g for g in match.groups() if g)
        for parts in references(code):
            head = parts[0]
            if head in bound:
                continue
            if head == "var":
                if len(parts) < 2 or parts[1] not in config.variables:
                    problems.add(f"{rel}: var.{parts[1] if len(parts) > 1 else ''} is not a declared variable")
                elif len(parts) > 2:
                    vtype = parse_type(str(config.variables[parts[1]].get("type", "")))
                    problem = attribute_problem(vtype, parts[2:], parts[1]) if vtype else None
                    if problem:
                        problems.add(f"{rel}: {problem}")
            elif head == "local":
                if len(parts) < 2 or parts[1] not in config.locals:
                    problems.add(f"{rel}: local.{parts[1] if len(parts) > 1 else ''} is never declared in locals")
            elif head == "data":
                name = ".".join(parts[1:3])
                if len(parts) < 3 or name not in config.data:
                    problems.add(f"{rel}: data.{name} is not a declared data source")
            elif head == "module":
                if len(parts) < 2 or parts[1] not in config.modules:
                    problems.add(f"{rel}: module.{parts[1] if len(parts) > 1 else ''} is not a module call here")
                    continue
                target = module_dir(config, parts[1])
                if len(parts) >= 3 and target in configs and parts[2] not in configs[target].outputs:
                    problems.add(
                        f"{rel}: module.{parts[1]}.{parts[2]}: module {target.relative_to(root)} has no output {parts[2]!r}"
                    )
            elif head in BUILTIN_ROOTS:
                continue
            elif RESOURCE_TYPE.match(head) and len(parts) >= 2:
                name = f"{head}.{parts[1]}"
                if name not in config.resources:
                    problems.add(f"{rel}: {name} is not a declared resource")
    for name, call in config.modules.items():
        target = module_dir(config, name)
        if target is None:
            continue
        if target not in configs:
            problems.add(f"{where}: module {name!r}: source {unquote(call.get('source'))!r} is not a directory here")
            continue
        module = configs[target]
        passed = {k for k in call if not k.startswith("__") and k not in MODULE_META_ARGS}
        for arg in sorted(passed - set(module.variables)):
            problems.add(f"{where}: module {name!r} passes {arg!r}, which {target.relative_to(root)} does not declare")
        for var, body in sorted(module.variables.items()):
            if "default" not in body and var not in passed:
                problems.add(f"{where}: module {name!r} does not pass required variable {var!r}")
    # .tfvars next to the root (bootstrap/terraform.tfvars, platform/environments/*.tfvars)
    tfvars = sorted(config.path.glob("*.tfvars")) + sorted(config.path.glob("environments/*.tfvars"))
    for path in tfvars:
        try:
            with path.open(encoding="utf-8") as handle:
                values = hcl2.load(handle)
        except Exception as exc:  # the parser raises several exception types
            problems.add(f"{path.relative_to(root)}: {exc}")
            continue
        for name, value in values.items():
            if name.startswith("__") or name not in config.variables:
                continue
            vtype = parse_type(str(config.variables[name].get("type", "")))
            for problem in value_problems(vtype, value, f"{path.relative_to(root)}: {name}"):
                problems.add(problem)
    return sorted(problems)


def module_dir(config: Config, name: str) -> Path | None:
    source = unquote(config.modules[name].get("source"))
    if not isinstance(source, str) or not source.startswith(("./", "../")):
        return None  # registry or git module: not resolvable offline
    return (config.path / source).resolve()


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    root = Path(sys.argv[1]).resolve()
    errors: list[str] = []
    directories = sorted(
        {p.parent for p in root.rglob("*.tf") if ".terraform" not in p.parts}
    )
    configs = {d: load_config(d, root, errors) for d in directories}
    failed = 0
    if errors or not configs:
        failed += 1
        print("not ok references: HCL does not parse:")
        for error in errors or ["no .tf files"]:
            print(f"    {error}")
    for directory, config in configs.items():
        problems = check_config(config, root, configs)
        name = f"references resolve in {directory.relative_to(root)}"
        if problems:
            failed += 1
            print(f"not ok {name}:")
            for problem in problems:
                print(f"    {problem}")
        else:
            print(f"ok {name}")
    print(f"summary: {len(configs) - failed} ok, {failed} not ok")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
