"""The team server's command line: `make server` and `make server-stop` run it.

python -m mnist_pipeline.server start | stop | status
python -m mnist_pipeline.server add-user NAME
python -m mnist_pipeline.server grant NAME EXPERIMENT PERMISSION [--model NAME]
"""

import argparse

from mnist_pipeline import cli, server
from mnist_pipeline.server.admin import NEW_USER_PASSWORD, add_user, grant
from mnist_pipeline.server.config import address, local_url
from mnist_pipeline.server.process import start, status, stop


def main(argv: list[str] | None = None) -> int:
    purpose = (server.__doc__ or "").split("\n")[0]
    parser = argparse.ArgumentParser(prog="python -m mnist_pipeline.server", description=purpose)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("start", help="start PostgreSQL and mlflow server in the background")
    commands.add_parser("stop", help="stop mlflow server, then PostgreSQL")
    commands.add_parser("status", help="say what runs (exit 1 when the server does not answer)")
    add = commands.add_parser("add-user", help=f"create a user; the password from {NEW_USER_PASSWORD} or a prompt")
    add.add_argument("name")
    give = commands.add_parser("grant", help="give a user READ, USE, EDIT or MANAGE on an experiment")
    give.add_argument("name")
    give.add_argument("experiment", help="experiment name (created when missing)")
    give.add_argument("permission", help="READ, USE, EDIT, MANAGE or NO_PERMISSIONS")
    give.add_argument("--model", help="also on this registered model (created when missing)")
    for each in (add, give):
        each.add_argument("--url", help="the server (default: this machine's, at MLFLOW_HOST and MLFLOW_PORT)")
    args = parser.parse_args(argv)
    return cli.run(lambda: _command(args))


def _command(args: argparse.Namespace) -> int:
    if args.command == "start":
        start()
    elif args.command == "stop":
        stop()
    elif args.command == "status":
        return 0 if status() else 1
    else:
        url = args.url or local_url(*address())
        if args.command == "add-user":
            add_user(url, args.name)
        else:
            grant(url, args.name, args.experiment, args.permission, args.model)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
