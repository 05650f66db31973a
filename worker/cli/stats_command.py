"""`python -m worker stats`: analyse sufficient statistics given as JSON on stdin.

Reads one analysis request (see ``worker.stats.schema.AnalysisRequest``), prints the
result as JSON on stdout. It runs ``worker.stats.analyze``, the function the worker
uses, so the calculator and the live results never disagree.
"""

from __future__ import annotations

import argparse
import json
import sys

from pydantic import ValidationError

from worker.errors import InvalidInput
from worker.stats import AnalysisRequest, analyze


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``stats`` subcommand."""
    parser = subparsers.add_parser(
        "stats",
        help="statistics calculator (JSON on stdin)",
        description=(
            "Read an analysis request as JSON on stdin (metric, engine, variants with "
            "their sufficient statistics, ...) and print the results as JSON. "
            '"cuped": true adjusts proportion and mean metrics by a pre-period covariate '
            "x (the unit's value of the metric before it entered): every variant then "
            "carries covariate_sum (Σx), covariate_sum_squares (Σx²) and "
            "covariate_product_sum (Σxy); the result adds cuped_theta and each variant's "
            "variance_reduction."
        ),
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Validate stdin, analyse, print the result; invalid input exits with status 2."""
    request = parse_request(sys.stdin.read())
    result = analyze(request)
    # allow_nan=False: the engine promises null, never NaN or Infinity, in its output.
    print(json.dumps(result.model_dump(mode="json"), indent=2, allow_nan=False))
    return 0


def parse_request(text: str) -> AnalysisRequest:
    """The validated request, or a one-sentence InvalidInput saying what is wrong."""
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidInput(
            f"stdin is not valid JSON ({error.msg} at line {error.lineno} column {error.colno})"
        ) from None
    try:
        return AnalysisRequest.model_validate(payload)
    except ValidationError as error:
        raise InvalidInput(_first_problem(error)) from None


def _first_problem(error: ValidationError) -> str:
    """The first validation problem as one line: where, then what."""
    problem = error.errors()[0]
    where = ".".join(str(part) for part in problem["loc"])
    message = problem["msg"].removeprefix("Value error, ")
    extra = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"invalid input: {where + ': ' if where else ''}{message}{extra}"
