"""Run ``continuousflex-geodl`` with some default settings replaced (gap
experiments only: settings that have no command-line option).

    python train_with.py '{"gmm_box": 1.0}' train --particles ... --out ...

The JSON object overrides ``core.training.config.default_settings()``; the
overrides are recorded in the model's config.json like any other setting.
"""
import json
import sys

from continuousflex_geodl.core.training import trainer


def main():
    over = json.loads(sys.argv[1])
    base = trainer.default_settings
    unknown = set(over) - set(base())
    if unknown:
        raise SystemExit('unknown settings: %s' % sorted(unknown))
    trainer.default_settings = lambda: {**base(), **over}
    from continuousflex_geodl.core.cli import main as cli_main
    return cli_main(sys.argv[2:])


if __name__ == '__main__':
    sys.exit(main())
