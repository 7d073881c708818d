"""Shared settings of the benchmark suites."""


def pytest_benchmark_update_json(config, benchmarks, output_json):
    # pytest-benchmark writes every raw sample into the JSON; for microsecond benchmarks that
    # is megabytes per file. Comparisons only use the summary statistics, so keep those.
    for bench in output_json["benchmarks"]:
        bench["stats"].pop("data", None)


def pytest_sessionstart(session):
    # The reference's compiled blend (reference_path.py) is built once, before any benchmark runs,
    # so its compile time never lands in a timing. Without a C compiler the suites that need it
    # skip their reference columns with the reason; the rest run as usual.
    from reference_path import ReferenceUnavailable, require_reference_blend

    try:
        require_reference_blend()
    except ReferenceUnavailable:
        pass
