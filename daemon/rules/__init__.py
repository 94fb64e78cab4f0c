"""The rule language: what to do with which files (documented in docs/rules.md).

A rule is one YAML file in the rules directory. The package holds no code; import from
the module that owns what you need:

- :mod:`daemon.rules.schema`     the pydantic models of a rule file (Rule, Match, Step,
  Output, Range) and ``parse_size``; the parts live in ``schema_common`` (variables,
  globs, sizes), ``schema_match``, ``schema_step`` and ``schema_output``
- :mod:`daemon.rules.load`       reading the rules directory: ``load_rules``, ``rule_files``,
  ``load_rule_file``, every problem as ``file:line:col``; ``cross_check`` against the config
- :mod:`daemon.rules.match`      ``RuleSet``, ``judge`` and ``Verdict``: which rules take an
  arrival, and why the others do not (``ImageFacts`` is what they may look at)
- :mod:`daemon.rules.sidecars`   ``photo.txt``/``.json``/``.yaml`` and ``photo.mask.png``:
  their names and parsing
- :mod:`daemon.rules.references` a step's ``references:`` globs resolved to files
- :mod:`daemon.rules.plan`       ``plan_for`` (a rule + gathered facts -> ``daemon.types.Plan``)
  and ``output_path``; the files a plan names are found in ``plan_files``, its paths made
  in ``plan_paths``
- :mod:`daemon.rules.templates`  safe ``{name}`` substitution for prompts and paths
- :mod:`daemon.rules.globs`      the include/exclude glob dialect

Nothing here reads an arrival's bytes: :mod:`daemon.intake` gathers the facts and hands them
to ``plan_for``.
"""
