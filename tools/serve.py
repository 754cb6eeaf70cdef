"""Serve a model with the real Cog HTTP server on localhost: `script/serve`.

SIGTERM (as Docker sends it) and Ctrl-C stop it by one rule (tools/server.py,
stop_gracefully): running predictions get SHUTDOWN_GRACE_S seconds to finish, then they
are cancelled, every client gets a terminal status, and the process exits.
"""

from __future__ import annotations

import argparse
import signal
import sys

from models.specs import SPECS
from tools.select import TRAIN_REF, selected_model
from tools.server import PortInUse, model_ref, started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(SPECS), help="default: the one in cog.yaml")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--train", action="store_true", help="serve POST /trainings (train.py)")
    args = parser.parse_args(argv)
    model = args.model or selected_model()
    ref, env = model_ref(model)
    # SIGTERM takes the same path as Ctrl-C (which a background job may have had ignored).
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.default_int_handler)
    shown = TRAIN_REF if args.train else ref
    print(f"Starting {model} ({shown}) on http://{args.host}:{args.port}...", file=sys.stderr)
    try:
        serving = started(
            ref,
            env=env,
            host=args.host,
            port=args.port,
            echo=True,
            ready_timeout=None,
            train=args.train,
        )
        with serving as server:
            print(
                f"Serving {model} on {server.url}: inputs are validated against its schema as "
                "in a cog build image. Ctrl-C stops it.",
                file=sys.stderr,
            )
            server.proc.wait()
        print(f"The Cog server exited with {server.proc.returncode}.", file=sys.stderr)
        return 1
    except (PortInUse, RuntimeError) as err:  # the port, or the predictor's setup
        print(err, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("Stopped.", file=sys.stderr)
        return 0


if __name__ == "__main__":
    sys.exit(main())
