"""CLI commands of the consensus area; `register` adds them to the parser built in main.py.

Commands:
  flame-jax serve [--model DIR [--model-name NAME]]
                  [--backend {oracle,most-frequent,noisy-oracle} ... --data DIR [--truth DIR]]
                  [--noise 0.3] [--host 127.0.0.1] [--port 8000]
                  [--api-key KEY | env FLAME_JAX_API_KEY]
                  [--max-request-bytes 1000000] [--max-concurrency 4] [--max-queue 16]
                  [--max-connections 256] [--header-timeout 10] [--body-timeout 15]
                  [--max-header-bytes 16384] [--keep-alive-timeout 5] [--max-tokens 4096]
                  [--max-prompt-tokens 4096]
  flame-jax consensus vignettes --data DIR --out FILE [--split test --limit N --no-history]
  flame-jax consensus run --config YAML [--out DIR --overwrite --quiet]
"""

import argparse
import os
from pathlib import Path

__all__ = ["build_backends", "register"]

BACKENDS = ("oracle", "most-frequent", "noisy-oracle")
API_KEY_ENV = "FLAME_JAX_API_KEY"


def _print(*args) -> None:
    print(*args, flush=True)


def build_backends(
    names: list[str], data: Path, truth: Path | None, *, noise: float = 0.3, seed: int = 0
) -> dict:
    """Model name -> chat backend for ``flame-jax serve`` (dataset-backed recommenders)."""
    from flame_jax.consensus import RecommenderMember, dataset_recommender
    from flame_jax.data import load_dataset, load_rules
    from flame_jax.serve import RecommenderBackend

    dataset = load_dataset(data)
    rules = None
    if any(n in ("oracle", "noisy-oracle") for n in names):
        if truth is None:
            raise ValueError("--backend oracle / noisy-oracle needs --truth (truth/rules.json)")
        rules = load_rules(Path(truth) / "rules.json")
    backends = {}
    for name in dict.fromkeys(names):
        kind = "most-frequent" if name == "most-frequent" else "oracle"
        fn = dataset_recommender(
            dataset, kind, rules=rules, noise=noise if name == "noisy-oracle" else 0.0, seed=seed
        )
        member = RecommenderMember(name, fn, dataset.med_vocab.titles)
        backends[name] = RecommenderBackend(member)
    return backends


def cmd_serve(args: argparse.Namespace) -> int:
    from flame_jax.serve import PolicyBackend, create_app, run_server

    if not args.backend and args.model is None:
        raise ValueError("serve: give --model DIR (a local LLM) and/or --backend NAME")
    if args.backend and args.data is None:
        raise ValueError("serve: --backend needs --data (the dataset folder)")
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    backends = {}
    if args.model is not None:
        backends[args.model_name or Path(args.model).name] = PolicyBackend(
            args.model, max_prompt_tokens=args.max_prompt_tokens, max_new_tokens=args.max_tokens
        )
    if args.backend:
        backends.update(build_backends(args.backend, args.data, args.truth, noise=args.noise))
    app = create_app(
        backends,
        api_key=api_key,
        max_request_bytes=args.max_request_bytes,
        max_concurrency=args.max_concurrency,
        max_queue=args.max_queue,
        max_tokens_limit=args.max_tokens,
        body_timeout_s=args.body_timeout,
    )
    _print(
        f"serving {', '.join(backends)} on http://{args.host}:{args.port}/v1 "
        f"(API key {'required' if api_key else 'not required'})"
    )
    run_server(
        app,
        host=args.host,
        port=args.port,
        header_timeout_s=args.header_timeout,
        keep_alive_timeout_s=args.keep_alive_timeout,
        max_connections=args.max_connections or None,
        max_header_bytes=args.max_header_bytes,
    )
    return 0


def cmd_vignettes(args: argparse.Namespace) -> int:
    from flame_jax.consensus import render_vignettes, save_vignettes
    from flame_jax.data import load_dataset

    dataset = load_dataset(args.data)
    rows = dataset.split_rows(args.split)
    if args.limit is not None:
        rows = rows[: args.limit]
    if not len(rows):
        raise ValueError(f"{args.data}: split {args.split!r} has no visits")
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{out} exists (pass --overwrite to replace it)")
    vignettes = render_vignettes(dataset, rows, history=not args.no_history)
    save_vignettes(out, vignettes)
    _print(f"wrote {len(vignettes)} vignettes of the {args.split} split to {out}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from flame_jax.config import dump_config, load_config
    from flame_jax.consensus import (
        ConsensusRunConfig,
        format_paired,
        format_strategy_table,
        run_consensus,
    )

    config = load_config(ConsensusRunConfig, args.config)
    out = None if args.out is None else Path(args.out)
    result = run_consensus(config, out, overwrite=args.overwrite, progress=not args.quiet)
    if result.fixed_ensembles:
        for s, names in result.fixed_ensembles.items():
            _print(f"{s} ensemble (from the calibration history): {', '.join(names)}")
    _print(format_strategy_table(result.reports))
    if result.paired:
        _print(format_paired(result))
    if out is not None:
        dump_config(config, out / "config.yaml")
        _print(
            f"wrote {out}/metrics.json, metrics.md, rounds.jsonl, history.jsonl, history.csv, "
            "strategies.png, calibration.png, config.yaml"
        )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add this area's commands (``serve``, ``consensus ...``) to ``sub``."""
    serve = sub.add_parser(
        "serve", help="OpenAI-compatible chat-completions server for a local LLM or recommenders"
    )
    serve.add_argument("--model", type=Path, help="Hugging Face model folder (flame_jax policy)")
    serve.add_argument("--model-name", help="served name of --model (default: folder name)")
    serve.add_argument(
        "--backend",
        action="append",
        choices=BACKENDS,
        help="a served recommender (repeatable); the model name is the backend name",
    )
    serve.add_argument("--data", type=Path, help="dataset folder (for --backend)")
    serve.add_argument("--truth", type=Path, help="truth/ folder (for the oracle backends)")
    serve.add_argument("--noise", type=float, default=0.3, help="score noise of noisy-oracle")
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--api-key", help=f"require this bearer key (default: ${API_KEY_ENV} if set)"
    )
    limits = serve.add_argument_group("limits (see docs/consensus.md)")
    limits.add_argument(
        "--max-request-bytes", type=int, default=1_000_000, help="largest body (else 413)"
    )
    limits.add_argument(
        "--max-concurrency", type=int, default=4, help="completions computed at once"
    )
    limits.add_argument(
        "--max-queue", type=int, default=16, help="requests waiting for a slot (beyond: 429)"
    )
    limits.add_argument(
        "--max-connections",
        type=int,
        default=256,
        help="open connections beyond which new requests get 503 (0: no limit)",
    )
    limits.add_argument(
        "--header-timeout",
        type=float,
        default=10.0,
        help="seconds for a request's headers to arrive (else the connection is closed)",
    )
    limits.add_argument(
        "--body-timeout",
        type=float,
        default=15.0,
        help="seconds for a request's whole body to arrive (else 408, connection closed)",
    )
    limits.add_argument(
        "--max-header-bytes",
        type=int,
        default=16 * 1024,
        help="largest request line plus headers (else 400, connection closed)",
    )
    limits.add_argument(
        "--keep-alive-timeout", type=float, default=5.0, help="idle seconds before closing"
    )
    limits.add_argument(
        "--max-tokens", type=int, default=4096, help="largest max_tokens (else 422)"
    )
    limits.add_argument(
        "--max-prompt-tokens",
        type=int,
        default=4096,
        help="longest prompt of --model in tokens (else 400)",
    )
    serve.set_defaults(func=cmd_serve)

    consensus = sub.add_parser(
        "consensus", help="multi-model collaboration: vignettes, strategy experiments"
    ).add_subparsers(dest="consensus_command", required=True, metavar="SUBCOMMAND")
    vig = consensus.add_parser("vignettes", help="render dataset visits as JSONL vignettes")
    vig.add_argument("--data", required=True, type=Path, help="dataset folder")
    vig.add_argument("--out", required=True, type=Path, help="output .jsonl file")
    vig.add_argument("--split", default="test", choices=("train", "val", "test"))
    vig.add_argument("--limit", type=int, help="first N visits of the split")
    vig.add_argument("--no-history", action="store_true", help="omit earlier admissions")
    vig.add_argument("--overwrite", action="store_true")
    vig.set_defaults(func=cmd_vignettes)

    run = consensus.add_parser("run", help="compare ensemble strategies (YAML config)")
    run.add_argument("--config", required=True, type=Path, help="ConsensusRunConfig YAML")
    run.add_argument("--out", type=Path, help="output folder")
    run.add_argument("--overwrite", action="store_true")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.set_defaults(func=cmd_run)
