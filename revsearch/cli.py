"""The command line: a thin layer over the library.

Run ``revsearch --help`` (or ``python -m revsearch --help``). Errors print one line and exit
non-zero; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse

import logging
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .core.version import __version__
from .core.errors import IndexDamagedError, RevsearchError
from .core.safety import display_name, to_json

EXIT_ERROR = 1
EXIT_USAGE = 2


def _weights(value: str) -> str | None:
    return None if value.lower() == "none" else value


def _positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {n}")
    return n


def _say(text: str, *, err: bool = False) -> None:
    """Print one line, control characters (of file names) escaped (see :func:`revsearch.core.safety.display_name`)."""
    stream = sys.stderr if err else sys.stdout
    text = display_name(text)
    try:
        print(text, file=stream)
    except UnicodeEncodeError:
        data = (text + "\n").encode(getattr(stream, "encoding", None) or "utf-8", "surrogateescape")
        buffer = getattr(stream, "buffer", None)
        stream.flush()
        if buffer is not None:
            buffer.write(data)
            buffer.flush()
        else:
            print(data.decode("utf-8", "replace"), end="", file=stream)


def _warn(text: str) -> None:
    _say(f"revsearch: warning: {text}", err=True)


def _warn_incomplete(index: Any) -> None:
    if not index.complete:
        where = index.dataset_dir or "DATASET_DIR"
        _warn(
            f"the index in {index.folder} is incomplete (an indexing run did not finish): results come from the "
            f"{len(index)} images indexed so far; run `revsearch index {where} {index.folder}` to finish it"
        )


def _cmd_index(args: argparse.Namespace) -> int:
    from .operations import build_index

    # the search expansion recorded in the index (re-tuned for this collection), only where asked for
    expansion = None
    if _options_given(args) or args.no_expand:
        from .operations import open_for_writing

        expansion = _expansion(args, open_for_writing(args.vector_dir))
    result = build_index(
        args.dataset_dir, args.vector_dir, args.model, weights=args.weights, backend=args.backend,
        precision=args.precision, resolution=getattr(args, "resolution", None), scales=getattr(args, "scales", None),
        batch_size=args.batch_size, workers=args.workers, prune=args.prune, exclude=args.exclude,
        dask=getattr(args, "dask", None), dask_workers=args.dask_workers, partition_size=args.partition_size,
        follow_links=args.follow_links, progress=not args.quiet, expansion=expansion,
    )
    index = result.index
    for s in result.report.skipped:
        _say(f"skipped {s.path}: {s.reason}", err=True)
    spec = index.spec
    how = f"{spec.get('backend', 'keras')} {spec.get('precision', 'float32')}"
    _say(f"{index.folder}: {len(index)} vectors ({spec['model']}, {index.dim}-d) by {how}; {result.summary()}")
    ann = index.manifest.ann
    if ann:  # an approximate index was brought up to date (revsearch.retrieval.ann)
        last = ann.get("last_update", {})
        print(f"approximate index: {ann['kind']}, {ann['count']} vectors ({last.get('action', 'built')})")
    elif index.manifest.ann_stale:
        print(f"approximate index: out of date, search is exact; rebuild: revsearch ann {index.folder}", file=sys.stderr)
    return 0


def _scales(value: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in value.replace("+", ",").split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--scales takes input sides separated by commas, e.g. 224,320; not {value!r}") from None


def _add_search_options(p: argparse.ArgumentParser) -> None:
    """Search-side options (revsearch.retrieval.rerank) of ``search`` and ``evaluate``: expansion is on by default."""
    p.add_argument("--no-expand", action="store_true",
                   help="plain cosine search: no query expansion, no database-side augmentation (they are on by "
                        "default: the index's recorded expansion, else qe=2 dba=2 alpha=3)")
    p.add_argument("--qe", type=int, default=None, metavar="K",
                   help="alpha query expansion from the K best matches (0: off; default: the index's, 2)")
    p.add_argument("--alpha", type=float, default=None, help="query-expansion weight exponent (default: the index's, 3)")
    p.add_argument("--dba", type=int, default=None, metavar="K",
                   help="database-side augmentation with K neighbours (0: off; default: the index's, 2; stored in the "
                        "index by every update)")
    p.add_argument("--dba-alpha", type=float, default=None, help="database-augmentation weight exponent (default: the index's, 3)")


def _expansion(args: argparse.Namespace, index: Any, *, plain: bool = False) -> Any:
    """The Expansion the search/evaluate options ask for, and whether any was given explicitly."""
    from .retrieval.rerank import NO_EXPANSION, Expansion

    given = {k: getattr(args, k) for k in ("qe", "alpha", "dba", "dba_alpha") if getattr(args, k, None) is not None}
    if getattr(args, "no_expand", False):
        if given:
            raise ValueError("--no-expand turns expansion off: leave out --qe/--alpha/--dba/--dba-alpha (or --no-expand)")
        return NO_EXPANSION
    base = NO_EXPANSION if plain else index.expansion if index is not None else Expansion()
    return Expansion(**{**base.to_dict(), **given})


def _options_given(args: argparse.Namespace) -> bool:
    return any(getattr(args, k, None) is not None for k in ("qe", "alpha", "dba", "dba_alpha"))


def _cmd_search(args: argparse.Namespace) -> int:
    from .operations import ImageQuery, IncompatibleOptionsError, open_index, search

    if args.text is not None:
        if args.query is not None:
            raise ValueError("give either a query image or --text, not both")
        from .operations import TextQuery

        query: Any = TextQuery(args.text)  # words: a CLIP index's text tower embeds them
    elif args.query is None:
        raise ValueError('give the query image (revsearch search QUERY VECTOR_DIR) or words (--text "a red car" VECTOR_DIR)')
    else:
        query = ImageQuery(args.query)  # a file, or an http(s) URL: a bad query fails here, before the model loads
    index = open_index(args.vector_dir)
    if args.text is not None:
        query.check(index)  # an image-only index: one line, before any model loads
    _warn_incomplete(index)
    expansion = _expansion(args, index, plain=not query.expands_by_default)
    if getattr(args, "dask", None) and not _options_given(args) and not args.no_expand:
        from .retrieval.rerank import NO_EXPANSION

        logging.getLogger(__name__).info("--dask: an exact plain search on the cluster (no expansion)")
        expansion = NO_EXPANSION
    try:
        matches = search(
            index, query, args.k, dataset_dir=args.dataset_dir, exact=getattr(args, "exact", False),
            backend=getattr(args, "backend", None), expand=expansion, rotations=args.rotations, under=args.under,
            exclude=args.exclude, dask=getattr(args, "dask", None),
        )
    except IncompatibleOptionsError as e:  # said with the command line's words
        raise ValueError(_option_words(str(e))) from None
    if args.out:
        from .display import plot_results, save_figure

        fig = plot_results(query.picture(), matches)
        if query.picture() is None:  # words: the text above the grid
            fig.suptitle(query.label, fontsize=12, fontweight="bold")
        save_figure(fig, args.out)
    if args.json:
        out: dict[str, Any] = {
            "query": args.query,
            **({"text": args.text} if args.text is not None else {}),
            "index": str(index.folder),
            "model": index.spec["model"],
            "k": args.k,
            "options": {**expansion.to_dict(), "rotations": args.rotations},
            "results": [
                {"rank": m.rank + 1, "score": round(m.score, 6), "path": str(m.path), "relpath": m.relpath}
                for m in matches  # type: ignore[union-attr]
            ],
        }
        if args.out:
            out["figure"] = args.out
        print(to_json(out, indent=2))
    else:
        for m in matches:  # type: ignore[union-attr]
            _say(f"{m.rank + 1:>3}  {m.score:.4f}  {m.path}")
        if args.out:
            print(f"saved {args.out}", file=sys.stderr)
    return 0


def _option_words(message: str) -> str:
    """A message of the operations layer, with its option names as the command line spells them."""
    return re.sub(
        r"\b(qe|dba|rotations|under|exclude|dask|near_duplicates)\b", lambda m: "--" + m[1].replace("_", "-"), message
    )


def _cmd_import_legacy(args: argparse.Namespace) -> int:
    from .operations import import_legacy

    index, legacy = import_legacy(
        args.legacy_dir, args.vector_dir, dataset_dir=args.dataset_dir, progress=not args.quiet
    )
    for path, reason in legacy.skipped:
        _say(f"skipped {path}: {reason}", err=True)
    print(f"{index.folder}: imported {len(index)} vectors (resnet50-seed, {index.dim}-d), {len(legacy.skipped)} skipped")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from .operations import open_index

    index = open_index(args.vector_dir)
    _warn_incomplete(index)
    info = {
        "folder": str(index.folder),
        "vectors": len(index),
        "complete": index.complete,
        "dataset_dir": str(index.dataset_dir) if index.dataset_dir else None,
        **index.spec,
        "shards": len(index.shards),
        "updated": index.manifest.updated,
        "ann": (lambda a: f"{a['kind']}, {a['count']} vectors" if a else None)(index.manifest.ann),
        "expansion": index.expansion.describe() + ("" if index.snapshot.augmentation is not None or not index.expansion.dba
                                                   else " (augmentation not stored yet: an update stores it)"),
    }
    if args.json:
        print(to_json(info, indent=2))
    else:
        for key, value in info.items():
            print(f"{key:>14}: {value}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .operations import IncompatibleOptionsError, evaluate, open_index

    index = open_index(args.vector_dir)
    if args.near_duplicates and (_options_given(args) or args.no_expand or args.tune):
        raise ValueError("--qe, --dba and --tune are evaluated on class retrieval: leave out --near-duplicates to use them")
    if args.tune:
        return _tune(args, index)
    options: dict[str, Any] = {} if args.near_duplicates else {"expand": _expansion(args, index)}
    try:
        report: Any = evaluate(
            index, args.dataset_dir, near_duplicates=args.near_duplicates, k=args.k, layout=args.layout,
            sample=args.sample or None, seed=args.seed, batch_size=args.batch_size,
            progress=not args.quiet and not args.json, **options,
        )
    except IncompatibleOptionsError as e:
        raise ValueError(_option_words(str(e))) from None
    if args.json:
        head = {"dataset_dir": args.dataset_dir, "index": str(index.folder), "model": index.spec["model"],
                "preprocessing": index.spec.get("preprocessing")}
        print(to_json({**head, **report.to_dict()}, indent=2))
        return 0
    k = report.k
    if args.near_duplicates:
        print(f"near duplicates in {index.folder} ({index.spec['model']}): {report.summary()}")
        print(f"{'edit':<12} {'copies':>6} {'recall@1':>9} {f'recall@{k}':>9}")
        for name, s in report.per_edit.items():
            print(f"{name:<12} {s.n:>6} {s.recall_at_1:>9.4f} {s.recall_at_k:>9.4f}")
        print(f"{'all':<12} {sum(s.n for s in report.per_edit.values()):>6} {report.recall_at_1:>9.4f} {report.recall_at_k:>9.4f}")
        for path in report.skipped:
            print(f"skipped {path}: unreadable", file=sys.stderr)
        return 0
    print(f"classes in {index.folder} ({index.spec['model']}, {report.layout} layout): {report.summary()}")
    print(f"pipeline: {index.spec.get('preprocessing')}; search options: {report.options_text()}")
    width = max([5, *(len(c) for c in report.per_class)])
    print(f"{'class':<{width}} {'images':>6} {f'prec@{k}':>8} {'AP':>8} {'recall@1':>9}")
    for name, c in report.per_class.items():
        print(f"{name:<{width}} {c.n_images:>6} {c.precision_at_k:>8.4f} {c.average_precision:>8.4f} {c.recall_at_1:>9.4f}")
    print(
        f"{'all':<{width}} {report.n_queries:>6} {report.precision_at_k:>8.4f} "
        f"{report.mean_average_precision:>8.4f} {report.recall_at_1:>9.4f}"
    )
    return 0


def _tune(args: argparse.Namespace, index: Any) -> int:
    """``evaluate --tune``: every expansion setting scored on the labelled collection, best first."""
    from .operations import tune_expansion

    if _options_given(args) or args.no_expand:
        raise ValueError("--tune tries every setting itself: leave out --qe/--alpha/--dba/--dba-alpha/--no-expand")
    results = tune_expansion(index, args.dataset_dir, k=args.k, layout=args.layout, progress=not args.quiet and not args.json)
    if args.json:
        print(to_json({"index": str(index.folder), "model": index.spec["model"], "k": args.k,
                       "results": [{**e.to_dict(), "precision_at_k": round(r.precision_at_k, 6),
                                    "mean_average_precision": round(r.mean_average_precision, 6),
                                    "recall_at_1": round(r.recall_at_1, 6), "as_search": r.options["as_search"]}
                                   for e, r in results]}, indent=2))
        return 0
    k = args.k
    print(f"expansion settings on {index.folder} ({index.spec['model']}), leave-one-out, best first:")
    print(f"{'qe':>3} {'dba':>3} {'alpha':>5} {'mAP':>7} {f'prec@{k}':>8} {'recall@1':>9}")
    for e, r in results:
        mark = "  <- what search does now" if r.options["as_search"] else ""
        print(f"{e.qe:>3} {e.dba:>3} {e.alpha:>5g} {r.mean_average_precision:>7.4f} {r.precision_at_k:>8.4f} "
              f"{r.recall_at_1:>9.4f}{mark}")
    best = results[0][0]
    record = "--no-expand" if not best.active else (
        f"--qe {best.qe} --alpha {best.alpha:g} --dba {best.dba} --dba-alpha {best.dba_alpha:g}")
    print(f"to search this collection with the best: revsearch index {args.dataset_dir} {index.folder} {record}")
    return 0


def _add_evaluate_parser(sub: Any) -> None:
    p = sub.add_parser(
        "evaluate",
        help="measure retrieval quality on a labelled folder (class per folder or CLASS_NUMBER.jpg), or near-duplicate recall",
    )
    p.add_argument("dataset_dir", metavar="DATASET_DIR", help="the folder the index was built from")
    p.add_argument("vector_dir", metavar="VECTOR_DIR", help="the index folder (any revsearch index, or an imported legacy one)")
    p.add_argument("-k", type=int, default=9, help="cut-off of precision@k / recall@k (default 9)")
    p.add_argument("--layout", choices=["auto", "folder", "prefix"], default="auto", help="where the class is read from")
    p.add_argument(
        "--near-duplicates",
        action="store_true",
        help="query with edited copies (JPEG q30, resize, crop, rotate, colour, grey, flip, letterbox, text) of indexed photos",
    )
    p.add_argument("--sample", type=int, default=200, help="photos to edit in --near-duplicates mode (default 200; 0: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the --sample draw")
    p.add_argument("--batch-size", type=_positive_int, default=32)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("--tune", action="store_true",
                   help="score every expansion setting (qe 0-3 x dba 0-3 x alpha 1/3) on this labelled collection, best first, "
                        "and print the command that records the best in the index")
    _add_search_options(p)  # evaluated from the index's vectors: nothing is rebuilt
    p.set_defaults(func=_cmd_evaluate)


def _cmd_ann(args: argparse.Namespace) -> int:
    from .operations import ann_info, build_ann, drop_ann

    if args.drop:
        had = drop_ann(args.vector_dir)
        print(f"{args.vector_dir}: approximate index {'removed' if had else 'absent'}; search is exact")
        return 0
    if args.info:
        meta = ann_info(args.vector_dir)
    else:
        meta = build_ann(
            args.vector_dir, kind=args.kind, memory_budget=args.memory_budget, nlist=args.nlist,
            pq_bytes=args.pq_bytes, nprobe=args.nprobe, rerank=args.rerank,
            target_recall=args.target_recall or None, progress=not args.quiet,
        )
    if args.json:
        print(to_json(meta, indent=2))
    elif meta is None:
        print(f"{args.vector_dir}: no approximate index (search is exact); build one with: revsearch ann {args.vector_dir}")
    else:
        params = ", ".join(f"{k}={v}" for k, v in meta["params"].items())
        size = f", {meta['file_bytes'] / 2**20:.1f} MiB on disk, ~{meta['memory_bytes_estimate'] / 2**20:.1f} MiB in memory"
        print(f"{args.vector_dir}: {meta['kind']} approximate index of {meta['count']} vectors ({params}){size}; "
              f"built {meta['built']} in {meta['build_seconds']:.1f} s")
        tuning = meta.get("tuning")
        if tuning:
            verdict = "reached" if tuning["reached"] else "NOT reached (search with --exact for exact results)"
            print(f"measured recall@{tuning['k']} {tuning['recall']:.3f} on {tuning['queries']} of its own vectors; "
                  f"target {tuning['target_recall']:.3f} {verdict}")
    return 0


def _add_ann_parser(sub: Any) -> None:
    p = sub.add_parser(
        "ann", help="build (or rebuild) the approximate (FAISS) index of an index; searches use it automatically"
    )
    p.add_argument("vector_dir", metavar="VECTOR_DIR", help="the index folder")
    p.add_argument(
        "--kind", choices=["auto", "flat", "ivfpq", "hnsw"], default="auto",
        help="auto (default): flat (exact) under 100k vectors, else IVF-PQ with exact re-ranking, or HNSW if "
        "--memory-budget holds the full vectors",
    )
    p.add_argument("--memory-budget", default=None, help="memory the index may use, e.g. 1GB (default: 1/8 of the vectors)")
    p.add_argument("--nlist", type=int, default=None, help="IVF cells (default ~sqrt(n))")
    p.add_argument("--pq-bytes", type=int, default=None, help="PQ code bytes per vector (default dim/32, within the budget)")
    p.add_argument("--nprobe", type=int, default=None, help="cells scanned per query (default max(16, nlist/64))")
    p.add_argument("--rerank", type=int, default=None, help="candidates re-scored exactly per query (default 100)")
    p.add_argument(
        "--target-recall", type=float, default=0.95,
        help="tune nprobe/rerank to reach this recall@9, measured on a sample of the index's own vectors "
        "(default 0.95; 0: no tuning)",
    )
    p.add_argument("--info", action="store_true", help="describe the approximate index instead of building one")
    p.add_argument("--drop", action="store_true", help="remove the approximate index (search becomes exact)")
    p.add_argument("--json", action="store_true", help="print the description as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_ann)


def _cmd_duplicates(args: argparse.Namespace) -> int:
    from .duplicates import move_duplicates, plot_duplicates, undo_moves
    from .operations import find_duplicates, open_index

    if args.undo:
        if not args.vector_dir and not args.dataset_dir:
            raise ValueError(
                "--undo LOG needs the index (or the dataset folder) the files were moved out of: "
                "revsearch duplicates VECTOR_DIR --undo LOG (or --undo LOG --dataset-dir DIR)"
            )
        undone = undo_moves(
            args.undo, index=args.vector_dir or None, dataset_dir=args.dataset_dir, move_to=args.move_to,
        )
        for path, reason in undone.skipped:
            _say(f"not restored {path}: {reason}", err=True)
        _say(undone.summary())
        return 0 if not undone.skipped else EXIT_ERROR
    if not args.vector_dir:
        raise ValueError("give the index folder: revsearch duplicates VECTOR_DIR (or --undo LOG)")
    if args.move_to:  # refuse a bad destination before the search, not after
        from .duplicates import check_destination

        index = open_index(args.vector_dir)
        if not args.dataset_dir:  # which files move is never chosen by a file (the manifest) alone
            raise ValueError(
                "--move-to moves photos out of the dataset folder: name it with --dataset-dir DIR "
                f"(this index records {display_name(index.dataset_dir)}); the folder an index file records "
                "is not trusted to choose which files move"
            )
        check_destination(args.move_to, args.dataset_dir or index.dataset_dir, index.folder)
    report = find_duplicates(
        args.vector_dir, args.threshold, against=args.against, k=args.k, keep=args.keep, progress=not args.quiet,
        mode=args.mode,
        dataset_dir=args.dataset_dir,
    )
    cal = report.calibration
    if cal is not None and not cal.calibrated and args.mode == "similar":
        print(f"note: threshold {report.threshold:.3f} is not calibrated for {cal.model!r}; check the groups "
              "(--plot) or pass --threshold", file=sys.stderr)
    if args.csv:
        report.write_csv(args.csv)
    pages: list[str] = []
    if args.plot and report.groups:
        from pathlib import Path

        from .display import save_figure

        figures = plot_duplicates(report)
        out = Path(args.plot)
        for i, fig in enumerate(figures):
            target = out if len(figures) == 1 else out.with_name(f"{out.stem}-{i + 1}{out.suffix}")
            save_figure(fig, target)
            pages.append(str(target))
    moved = None
    if args.move_to:
        moved = move_duplicates(report, args.move_to, progress=not args.quiet)
    if args.json:
        out_json = report.to_dict()
        out_json["plot"] = pages
        if moved is not None:
            out_json["moved"] = [[str(a), str(b)] for a, b in moved.moved]
            out_json["log"] = str(moved.log)
        print(to_json(out_json, indent=2))
    elif not args.csv:
        for gi, g in enumerate(report.groups):
            print(f"group {gi + 1} ({len(g)} files)")
            for j, f in enumerate(g.files):
                tag = " [against]" if f.collection == "against" else ""
                _say(f"  {'keep' if j == 0 else f'{f.score:.4f}':>6}  {f.path}{tag}")
    if moved is not None:
        for path, reason in moved.skipped:
            _say(f"not moved {path}: {reason}", err=True)
        print(moved.summary(), file=sys.stderr if args.json else sys.stdout)
        also = f" --dataset-dir {args.dataset_dir}" if args.dataset_dir else ""
        _say(f"undo with: revsearch duplicates {args.vector_dir} --undo {moved.log}{also}", err=True)
    else:
        dry = "dry run, nothing moved" + ("" if not report.groups else "; pass --move-to DIR to move the copies")
        print(f"{report.summary()}; {dry}", file=sys.stderr)
    if args.csv:
        print(f"saved {args.csv}", file=sys.stderr)
    for page in pages:
        print(f"saved {page}", file=sys.stderr)
    return 0


def _add_duplicates_parser(sub: Any) -> None:
    p = sub.add_parser(
        "duplicates", help="find groups of near-duplicate images (dry run), and move the copies aside (--move-to)"
    )
    p.add_argument("vector_dir", metavar="VECTOR_DIR", nargs="?", help="the index folder")
    p.add_argument(
        "--mode", choices=["copies", "similar"], default="copies",
        help="copies (default): one image is an edited copy of the other (crop, resize, JPEG, caption, turn, "
        "mirror, colours...), each pair verified on the images; similar: near-identical shots and the same scene "
        "(the vectors' cosine reaches --threshold)",
    )
    p.add_argument(
        "--threshold", type=float, default=None,
        help="similar: cosine in [-1, 1] at or above which images are duplicates; copies: the shortlist's cosine "
        "floor (default: calibrated for the model; a model without calibration: by rank)",
    )
    p.add_argument("--against", metavar="OTHER_VECTOR_DIR", default=None,
                   help="only pairs between VECTOR_DIR and this index (which is never changed)")
    p.add_argument("-k", type=int, default=None,
                   help="neighbours per image considered (default 16 in mode similar, 10 in mode copies)")
    p.add_argument("--keep", choices=["largest", "oldest", "newest", "first"], default="largest",
                   help="copy to keep: largest (pixels, then bytes; default), oldest/newest (mtime), first (path)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print the groups as JSON")
    out.add_argument("--csv", metavar="FILE", default=None, help="write one line per file to FILE")
    p.add_argument("--plot", metavar="FILE", default=None,
                   help="save pictures of the groups (one row per group; FILE-2.png... for more pages)")
    p.add_argument("--move-to", metavar="DIR", default=None,
                   help="move the copies not kept to DIR (outside the dataset folder), with a CSV log; never deletes")
    p.add_argument("--undo", metavar="LOG", default=None,
                   help="put back the files a --move-to LOG moved out of VECTOR_DIR's dataset folder (safe to run again)")
    p.add_argument("--dataset-dir", metavar="DIR", default=None,
                   help="where the images are (default: the dataset folder VECTOR_DIR records); with --undo: the folder "
                   "the files were moved out of")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_duplicates)


def _cmd_demo(args: Any) -> int:
    from .demo import SAMPLES, run_demo

    result = run_demo(args.dir, model=args.model, weights=args.weights, k=args.k, progress=not args.quiet)
    n = len(result.results.index) if result.results.index is not None else 0
    print(f"collection: {result.photos} ({n} photos: {len(SAMPLES)} samples, each also cropped, rotated, "
          "as a poor JPEG and captioned)")
    print(f"index:      {result.vector_dir}")
    print(f"query:      {result.query} (cropped and captioned: a copy the index has not seen)")
    for m in result.results:
        print(f"{m.rank + 1:>3}  {m.score:.4f}  {m.relpath}")
    verdict = "found" if result.found_the_original() else "did not find"
    print(f"The search {verdict} the query's photo (or one of its copies) first. Picture: {result.figure_path}")
    return 0


def _add_demo_parser(sub: Any) -> None:
    """Add ``revsearch demo`` to the command line's subparsers."""

    def weights(value: str) -> str | None:
        return None if value.lower() == "none" else value

    p = sub.add_parser(
        "demo",
        help="the whole job on sample photos: build a small collection, index it, search with an unseen edit",
    )
    p.add_argument("--model", default="resnet50", help="resnet50 (default) or mobilenet (faster)")
    p.add_argument("--weights", type=weights, default="imagenet", help="imagenet (default) or none (random, for tests)")
    p.add_argument("--dir", default="revsearch-demo", help="where the photos, index and result.png go")
    p.add_argument("-k", type=int, default=9, help="number of matches (default 9)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_demo)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``revsearch`` command (also used to check the docs)."""
    parser = argparse.ArgumentParser(
        prog="revsearch",
        description="Reverse image search: index a folder of photos, then find the most similar ones.",
    )
    parser.add_argument("--version", action="version", version=f"revsearch {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("index", help="index (or update the index of) a folder of images")
    p.add_argument("dataset_dir", metavar="DATASET_DIR", help="folder of images (searched recursively)")
    p.add_argument("vector_dir", metavar="VECTOR_DIR", help="folder for the index (created if needed)")
    p.add_argument(
        "--model",
        default=None,
        help="resnet50 (default for a new index), mobilenet, efficientnetv2-b0, efficientnetv2-s, convnext-tiny, "
        "resnet50-seed, or clip-vit-b32 / clip-vit-b16 / siglip-b16-224 (also searchable by words; needs revsearch[clip]); an existing "
        "index keeps its model",
    )
    p.add_argument(
        "--weights", type=_weights, default="imagenet",
        help="imagenet (default: the model's published weights), none (random, for tests), a weights file, or for "
        "CLIP models a local keras-hub preset folder",
    )
    p.add_argument(
        "--backend", choices=["auto", "keras", "openvino"], default=None,
        help="what runs the model: auto (default: OpenVINO on CPUs when installed, Keras on GPUs), keras, or "
        "openvino (pip install \"revsearch[openvino]\")",
    )  # fmt: skip
    p.add_argument(
        "--precision", choices=["float32", "bfloat16", "float16", "int8"], default=None,
        help="compute precision (default: the fastest one within 0.005 mAP of float32 that the CPU runs natively: "
        "bfloat16 with AVX512-BF16/AMX, else float32; float16/bfloat16 on a GPU). int8: OpenVINO model quantized "
        "by NNCF, calibrated on a seeded sample of the photos indexed. Vectors are comparable whatever the precision",
    )  # fmt: skip
    p.add_argument(
        "--batch-size", type=_positive_int, default=None, help="images per model call (default 32; larger on a GPU)"
    )
    p.add_argument("--resolution", type=int, default=None,
                   help="input side in pixels (default: the model's, 224; larger keeps more detail, ~(side/224)^2 the time)")
    p.add_argument("--scales", type=_scales, default=None,
                   help="multi-scale descriptors: input sides, e.g. 224,320 (the sum of the per-scale vectors)")
    _add_search_options(p)  # recorded in the index: what its searches use by default
    p.add_argument("--workers", type=_positive_int, default=None, help="image-reading threads (default: CPUs)")
    p.add_argument(
        "--prune", action="store_true",
        help="confirm an update that removes all the indexed images or more than half of them (refused without it)",
    )
    p.add_argument(
        "--exclude", metavar="PATTERN", action="append", default=None,
        help="leave out images matching PATTERN (repeatable; e.g. '*/thumbnails/*', 'raw', '*.png'); recorded in "
        "the index for later updates (default: the recorded ones); .revsearchignore in DATASET_DIR adds more",
    )
    p.add_argument(
        "--follow-links", choices=["inside", "all", "none"], default=None,
        help="which symbolic links in DATASET_DIR are followed: inside (default for a new index: only links whose "
        "target lies inside DATASET_DIR), all, or none; recorded in the index for later updates",
    )
    p.add_argument(
        "--dask", metavar="ADDRESS", default=None,
        help="embed on a Dask cluster: a scheduler address (tcp://host:8786) or 'local' (needs revsearch[dask])",
    )
    p.add_argument("--dask-workers", type=_positive_int, default=2, help="worker processes of --dask local (default 2)")
    p.add_argument("--partition-size", type=_positive_int, default=512, help="images per Dask task and shard (default 512)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_index)

    p = sub.add_parser("search", help="find the images most similar to QUERY (or matching --text on a CLIP index)")
    p.add_argument("query", metavar="QUERY", nargs="?", default=None,
                   help="the query image: a file or an http(s) URL (leave it out with --text)")
    p.add_argument("--text", metavar="WORDS", default=None,
                   help='search by words, e.g. --text "a red car at night" (an index built with --model clip-vit-b32)')
    p.add_argument("vector_dir", metavar="VECTOR_DIR", help="the index folder")
    p.add_argument("-k", type=int, default=9, help="number of results (default 9)")
    p.add_argument("--out", default=None, help="save the result picture (query above a grid) to this file")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--dataset-dir", default=None, help="where the images are now (default: as recorded in the index)")
    p.add_argument("--exact", action="store_true", help="exact search even if the index has an approximate index")
    p.add_argument(
        "--backend", choices=["auto", "keras", "openvino"], default=None,
        help="what embeds the query (default auto); any backend searches any index",
    )  # fmt: skip
    p.add_argument("--under", metavar="SUBFOLDER", default=None, help="search only images in this folder of the dataset")
    p.add_argument(
        "--exclude", metavar="PATTERN", action="append", default=None,
        help="leave out images whose path matches PATTERN (repeatable)",
    )
    p.add_argument("--dask", metavar="ADDRESS", default=None, help="exact search on a Dask cluster (address or 'local')")
    _add_search_options(p)
    p.add_argument("--rotations", action="store_true",
                   help="also search with the query rotated by 90/180/270 degrees (photos stored sideways); 4x the cost")
    p.set_defaults(func=_cmd_search)

    p = sub.add_parser("import-legacy", help="convert the original project's .pbz2/.pickle vector files into an index")
    p.add_argument("legacy_dir", metavar="LEGACY_VECTOR_DIR")
    p.add_argument("vector_dir", metavar="VECTOR_DIR", help="a new folder for the index")
    p.add_argument("--dataset-dir", default=None, help="the folder of the images the vectors were made from")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_import_legacy)

    p = sub.add_parser("info", help="describe an index")
    p.add_argument("vector_dir", metavar="VECTOR_DIR")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_info)

    _add_evaluate_parser(sub)
    _add_ann_parser(sub)
    _add_duplicates_parser(sub)
    _add_demo_parser(sub)
    for extra in _EXTRA_COMMANDS:
        extra(sub)
    return parser


#: Functions that add more subcommands (registered by optional modules).
_EXTRA_COMMANDS: list[Callable[[Any], None]] = []


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "k", 1) is not None and getattr(args, "k", 1) < 1:
        parser.error("-k must be at least 1")
    # Without --debug the command reports what matters itself (errors as one line, skipped
    # files): library log records would only repeat it.
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.CRITICAL, format="%(levelname)s %(name)s: %(message)s"
    )
    from .core.console import quiet_tensorflow

    handler = None
    if not args.debug:  # warnings the commands do not report themselves (the ANN falling back, a repair)
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_SafeFormatter("revsearch: warning: %(message)s"))
        for name in _WARNING_LOGGERS:  # shown here once, not again by the root logger's handler
            lg = logging.getLogger(name)
            lg.setLevel(logging.WARNING)
            lg.addHandler(handler)
            lg.propagate = False
    try:
        # TensorFlow's C++ start-up noise (oneDNN, CUDA drivers, cuInit) off the terminal unless --debug.
        with quiet_tensorflow(not args.debug):
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("revsearch: interrupted", file=sys.stderr)
        return 130
    except (RevsearchError, OSError, ValueError) as e:
        if args.debug:
            raise
        text = _damaged_words(e) if isinstance(e, IndexDamagedError) else str(e)
        message = " ".join(line.strip() for line in text.splitlines() if line.strip()) or type(e).__name__
        _say(f"revsearch: error: {message}", err=True)  # always one line
        return EXIT_ERROR
    finally:
        if handler is not None:
            for name in _WARNING_LOGGERS:
                lg = logging.getLogger(name)
                lg.removeHandler(handler)
                lg.setLevel(logging.NOTSET)
                lg.propagate = True


class _SafeFormatter(logging.Formatter):
    """Log lines with control characters of file names escaped: one record, one line."""

    def format(self, record: logging.LogRecord) -> str:
        return display_name(super().format(record))


#: Loggers whose warnings reach the command line's stderr (others are reported by the commands).
_WARNING_LOGGERS = ("revsearch.retrieval.ann", "revsearch.storage.indexing", "revsearch.storage.index")


def _damaged_words(e: IndexDamagedError) -> str:
    """The damaged-index error in command-line words: which command repairs it."""
    from .storage.store import read_manifest

    dataset = "DATASET_DIR"
    try:
        dataset = read_manifest(e.folder).dataset_absolute or dataset
    except (RevsearchError, OSError):
        pass
    return f"the index in {str(e.folder)!r} is damaged: {e.detail}; run `revsearch index {dataset} {e.folder}` again to repair it"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
