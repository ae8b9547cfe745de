"""``mlflow-relay``: run the relay locally, check a deployment, explain routing, sign payloads,
register webhooks, run the demo.

Each subcommand's parser is built in its own module (``add_<command>_parser``); this module
only assembles them, sets up logging and turns any error into one line and an exit code
(``relay_tools.cli_errors.ExitCode``, listed in the README).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import NoReturn

from relay_tools.cli_errors import ExitCode, describe

PROG = "mlflow-relay"
# Chatty at WARNING (multi-line credential-chain reports, host-metadata probes): shown with -v only.
QUIET_UNLESS_VERBOSE = ("azure", "databricks.sdk", "mlflow", "urllib3", "httpx")
VERBOSE_HELP = "log the relay's decisions (and the SDKs' warnings) to stderr"
DESCRIPTION = "Run the relay locally, check a deployment, explain routing, sign payloads, register webhooks."
EPILOG = """exit codes:
  0   success
  1   the command ran and found something wrong (a doctor check, a test delivery, a preview run)
  2   wrong command line or input file
  3   configuration: a setting, the rules file, a secret, a missing extra, sign-in not set up
  4   a service did not answer (Key Vault, Azure DevOps, storage, Databricks, MLflow): retry later
  5   a service refused (permission, unknown id, invalid request)
  70  internal error in the tool (please report it)
  130 interrupted"""


class OneLineParser(argparse.ArgumentParser):
    """An argument error is one line (what is wrong, where the help is), exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(ExitCode.USAGE, f"{self.prog}: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    from relay_tools.catch_up_command import add_catch_up_parser
    from relay_tools.deliveries import add_deliveries_parser
    from relay_tools.demo import add_demo_parser
    from relay_tools.doctor import add_doctor_parser
    from relay_tools.explain import add_explain_parser
    from relay_tools.retries import add_retries_parser
    from relay_tools.serve import add_serve_parser
    from relay_tools.sign import add_sign_parser
    from relay_tools.sync import add_sync_parser
    from relay_tools.webhooks_admin import add_webhooks_parser

    parser = OneLineParser(
        prog=PROG, description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-v", "--verbose", action="store_true", help=VERBOSE_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (
        add_serve_parser,
        add_doctor_parser,
        add_explain_parser,
        add_sign_parser,
        add_webhooks_parser,
        add_sync_parser,
        add_deliveries_parser,
        add_retries_parser,
        add_catch_up_parser,
        add_demo_parser,
    ):
        add(sub)
    accept_verbose_anywhere(parser)
    return parser


def accept_verbose_anywhere(parser: argparse.ArgumentParser) -> None:
    """Let ``-v`` follow any subcommand too (``mlflow-relay doctor -v``), at every depth.

    The subcommands' copies default to "not given", so they never undo a ``-v`` given first.
    """
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for subparser in dict.fromkeys(action.choices.values()):
                if "--verbose" not in subparser._option_string_actions:
                    subparser.add_argument(
                        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP
                    )
                accept_verbose_anywhere(subparser)


def configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
        force=True,
    )
    for name in QUIET_UNLESS_VERBOSE:
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else logging.ERROR)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; every error is one line on stderr and an ``ExitCode``."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or an argument error (2), already printed
        return int(exc.code or 0) if isinstance(exc.code, int | None) else ExitCode.USAGE
    configure_logging(args.verbose)
    command = " ".join(w for w in (PROG, args.command, getattr(args, "webhooks_command", None)) if w)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except Exception as exc:  # a person gets a reason and an exit code, never a traceback
        code, line = describe(exc)
        print(f"{command}: {line}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
