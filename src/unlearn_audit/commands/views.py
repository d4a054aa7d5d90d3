"""``unlearn-audit views``: every view, where it lives, what it measures, and its options."""

from __future__ import annotations

import json


def add_arguments(p) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def _describe(name: str) -> dict:
    import inspect

    from unlearn_audit.views import view_class

    cls = view_class(name)
    return {
        "view": name,
        "module": inspect.getsourcefile(cls) or cls.__module__,
        "title": cls.title,
        "metrics": list(cls.metrics),
        "options": [{"name": o.name, "type": o.type.__name__, "default": o.default, "help": o.help,
                     "choices": list(o.choices)} for o in cls.options],
    }


def run(args) -> int:
    from tabulate import tabulate

    from unlearn_audit.views import available_views

    views = [_describe(name) for name in available_views()]
    if args.json:
        print(json.dumps(views, indent=2))
        return 0
    rows = [(v["view"], v["title"], "\n".join(v["metrics"])) for v in views]
    print(tabulate(rows, headers=["view", "what it asks", "metrics"], tablefmt="github"))
    opts = [(f"{v['view']}.{o['name']}", o["type"], "(depends)" if o["default"] is None else o["default"],
             o["help"] + (f" ({', '.join(o['choices'])})" if o["choices"] else ""))
            for v in views for o in v["options"]]
    if opts:
        print("\nOptions (--view-option VIEW.NAME=VALUE, ini audit_view_option):\n")
        print(tabulate(opts, headers=["option", "type", "default", "meaning"], tablefmt="github"))
    return 0
