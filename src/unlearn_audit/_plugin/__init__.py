"""The pytest plugin's parts, each light to import (the plugin loads in every pytest run).

- :mod:`.state`: where the plugin keeps its session, and the keys outcomes travel under.
- :mod:`.options`: the option table (every option is also an ini key), its typed parsers,
  and building the run's :class:`~unlearn_audit.context.AuditConfig` from them.
- :mod:`.models`: labels for the models to audit, and the default audit context.
- :mod:`.reporter`: collecting outcomes (from every xdist worker) and writing the report.

:mod:`unlearn_audit.plugin` holds the hooks and fixtures that wire these into pytest.
"""
