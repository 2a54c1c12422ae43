import pytest

from nas_search.errors import UserError
from nas_search.units import parse_flops, parse_latency_ms, parse_memory_bytes


@pytest.mark.parametrize(
    "text, expected",
    [
        ("4.5GFLOPs", 4_500_000_000),
        ("4.5G", 4_500_000_000),
        ("450MFLOPs", 450_000_000),
        ("4.5GMACs", 4_500_000_000),
        ("4500000000", 4_500_000_000),
        ("4.5 gflops", 4_500_000_000),
    ],
)
def test_accepted_budget_forms(text, expected):
    assert parse_flops(text) == expected


@pytest.mark.parametrize("text", ["4.5GB", "lots", "-1G", "4.5 G FLOPS x", "", "0", "1e9"])
def test_rejected_budget_forms_list_accepted_ones(text):
    with pytest.raises(UserError) as error:
        parse_flops(text)
    assert "4.5GFLOPs" in str(error.value) and "\n" not in str(error.value)


def test_latency_and_memory():
    assert parse_latency_ms("15ms") == 15 and parse_latency_ms("800us") == pytest.approx(0.8)
    assert parse_memory_bytes("20MB") == 20_000_000 and parse_memory_bytes("1MiB") == 2**20
    for parse, text in ((parse_latency_ms, "fast"), (parse_memory_bytes, "20 parsecs")):
        with pytest.raises(UserError):
            parse(text)
