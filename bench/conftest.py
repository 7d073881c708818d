"""Shared settings of the benchmark suites."""


def pytest_benchmark_update_json(config, benchmarks, output_json):
    # pytest-benchmark writes every raw sample into the JSON; for microsecond benchmarks that
    # is megabytes per file. Comparisons only use the summary statistics, so keep those.
    for bench in output_json["benchmarks"]:
        bench["stats"].pop("data", None)
