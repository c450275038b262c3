"""Decimal strings at scale (SPEC §2) and parameter validation (SPEC §9)."""
from decimal import ROUND_HALF_EVEN, Decimal, localcontext

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fixtures import make_params, params_toml
from worker.core.fixed import (_DECIMAL_RE, DecimalFormatError, ceil_div, floor_div, format_units, half_even_div, iabs, mul,
                               parse_decimal)
from worker.core.params import ParamsError, parse_params


@pytest.mark.parametrize(
    "text, decimals, rounding, expected",
    [
        pytest.param("64123.5", 1, "exact", 641235, id="a price at its scale parses exactly"),
        pytest.param("12.5", 6, "exact", 12_500_000, id="fewer decimals than the scale are padded"),
        pytest.param("-0.001", 3, "exact", -1, id="a negative size keeps its sign"),
        pytest.param("19076.35", 1, "half_even", 190764, id="a mark tie rounds half-even up to an even tick"),
        pytest.param("19076.25", 1, "half_even", 190762, id="a mark tie rounds half-even down to an even tick"),
        pytest.param("19076.26", 1, "half_even", 190763, id="a mark above the tie rounds up"),
        pytest.param("0", 2, "exact", 0, id="zero is zero at any scale"),
    ],
)
def test_parse_decimal(text, decimals, rounding, expected):
    assert parse_decimal(text, decimals, rounding) == expected


@pytest.mark.parametrize(
    "value, code",
    [
        pytest.param("1.2345", "too_many_decimals", id="more decimals than the scale are refused"),
        pytest.param("1e5", "bad_decimal", id="an exponent is refused"),
        pytest.param("NaN", "bad_decimal", id="NaN is refused"),
        pytest.param("+1", "bad_decimal", id="a plus sign is refused"),
        pytest.param(" 1", "bad_decimal", id="whitespace is refused"),
        pytest.param("01", "bad_decimal", id="a leading zero is refused"),
        pytest.param(1.5, "wrong_type", id="a JSON float is refused"),
        pytest.param(15, "wrong_type", id="a JSON integer is refused for money"),
        pytest.param("9" * 41, "bad_decimal", id="an absurdly long number is refused before parsing"),
        pytest.param("1.", "bad_decimal", id="a dot without decimals is refused"),
        pytest.param(".5", "bad_decimal", id="decimals without a whole part are refused"),
        pytest.param("-", "bad_decimal", id="a lone minus is refused"),
        pytest.param("--1", "bad_decimal", id="a double minus is refused"),
        pytest.param("1.2.3", "bad_decimal", id="a second dot is refused"),
        pytest.param("1\n", "bad_decimal", id="a trailing newline is refused"),
        pytest.param("\u0661", "bad_decimal", id="a non-ASCII digit (Arabic-Indic one) is refused"),
        pytest.param("1.\u00b2", "bad_decimal", id="a superscript two among the decimals is refused"),
        pytest.param("", "bad_decimal", id="the empty string is refused"),
    ],
)
def test_parse_decimal_refuses(value, code):
    with pytest.raises(DecimalFormatError) as caught:
        parse_decimal(value, 3)
    assert caught.value.code == code


_DECIMAL_ALPHABET = "0123456789.-+e \n\u0661\u00b2\uff11"


@given(st.text(alphabet=_DECIMAL_ALPHABET, max_size=12) | st.from_regex(_DECIMAL_RE, fullmatch=True))
def test_a_string_parses_exactly_when_the_decimal_grammar_matches_it(text):
    # parse_decimal checks the grammar with str methods; the regex is the grammar as SPEC §2 writes it
    # (a scale of 40 decimals: "too many decimals" never hides the answer)
    try:
        parse_decimal(text, 40)
        accepted = True
    except DecimalFormatError as exc:
        assert exc.code == "bad_decimal"
        accepted = False
    assert accepted == (len(text) <= 40 and _DECIMAL_RE.match(text) is not None)


@given(st.from_regex(_DECIMAL_RE, fullmatch=True).filter(lambda text: len(text) <= 40), st.integers(0, 18))
def test_a_decimal_string_parses_to_its_exact_value_at_the_scale(text, decimals):
    # the reference is Python's Decimal: units = value · 10^decimals, exact when the fraction fits
    # the scale (else refused, or rounded half-even); 100 digits hold 40 characters at 18 decimals
    with localcontext() as context:
        context.prec = 100
        scaled = Decimal(text).scaleb(decimals)
    if len(text.partition(".")[2]) <= decimals:
        assert parse_decimal(text, decimals) == parse_decimal(text, decimals, "half_even") == int(scaled)
    else:
        with pytest.raises(DecimalFormatError) as caught:
            parse_decimal(text, decimals)
        assert caught.value.code == "too_many_decimals"
        assert parse_decimal(text, decimals, "half_even") == int(scaled.to_integral_value(ROUND_HALF_EVEN))


@pytest.mark.parametrize(
    "units, decimals, expected",
    [
        pytest.param(12_500_000, 6, "12.500000", id="exactly the scale's decimals"),
        pytest.param(-5, 6, "-0.000005", id="small negative amounts keep the leading zero"),
        pytest.param(0, 3, "0.000", id="zero has all its decimals"),
        pytest.param(42, 0, "42", id="a zero-decimal scale has no point"),
    ],
)
def test_format_units(units, decimals, expected):
    assert format_units(units, decimals) == expected


@given(st.integers(min_value=-10**30, max_value=10**30), st.integers(min_value=0, max_value=30))
def test_format_units_is_the_decimal_string_of_units_at_scale(units, decimals):
    # the reference: pad the digits to decimals + 1, put the point before the last `decimals`
    digits = str(abs(units)).rjust(decimals + 1, "0")
    expected = digits if decimals == 0 else f"{digits[:-decimals]}.{digits[-decimals:]}"
    assert format_units(units, decimals) == ("-" if units < 0 else "") + expected
    assert parse_decimal(format_units(units, decimals), decimals) == units


# mul's three ways meet at these: |x| < 2^31 for the compares, bit lengths adding up to 62 for the
# word product, anything else for the int product; each side of each edge, either sign
_EDGES = [0, 1, 2**30, 2**31 - 1, 2**31, 2**31 + 1, 2**32 - 1, 2**32, 2**40, 2**61 - 1, 2**61, 2**62, 2**63, 2**64 + 3]
_MUL_OPERANDS = (st.sampled_from(_EDGES + [-x for x in _EDGES]) | st.integers(min_value=-2**33, max_value=2**33)
                 | st.integers(min_value=-2**70, max_value=2**70))


def test_mul_is_the_exact_product_for_every_pair_of_edges():
    # every pair, both signs (hypothesis alone may not draw the one pair that wraps: 2^32 − 1 squared)
    signed = _EDGES + [-x for x in _EDGES]
    wrong = [(a, b) for a in signed for b in signed if mul(a, b) != a * b]
    assert wrong == []


@given(_MUL_OPERANDS, _MUL_OPERANDS)
def test_mul_is_the_exact_product_on_every_side_of_its_word_bounds(a, b):
    # compiled, the first two ways are i64 products: a wrong bound would wrap or lose the sign here
    assert mul(a, b) == a * b
    assert mul(b, a) == a * b


@given(_MUL_OPERANDS)
def test_iabs_is_abs(value):
    assert iabs(value) == abs(value)


def test_named_roundings_differ_only_where_they_should():
    # -7/2 = -3.5: floor -4, ceil -3, half-even -4 (even); 5/2 = 2.5: half-even 2
    assert (floor_div(-7, 2), ceil_div(-7, 2), half_even_div(-7, 2)) == (-4, -3, -4)
    assert (floor_div(5, 2), ceil_div(5, 2), half_even_div(5, 2)) == (2, 3, 2)


def test_btcusdt_2021_bracket_offsets():
    # cum_k = cum_{k-1} + floor(max_{k-1} · (mmr_k − mmr_{k-1}) / 10^6):
    # 0; 50 000·0.1 % = 50; 50 + 250 000·0.5 % = 1 300; 1 300 + 1 000 000·1.5 % = 16 300;
    # 16 300 + 10 000 000·2.5 % = 266 300 USDT, in units of 10^-6.
    params = make_params(btc_brackets=(
        '[{max_notional = "50000", mmr_ppm = 4000}, {max_notional = "250000", mmr_ppm = 5000},'
        ' {max_notional = "1000000", mmr_ppm = 10000}, {max_notional = "10000000", mmr_ppm = 25000},'
        ' {mmr_ppm = 50000}]'))
    offsets = [b.cum_units for b in params.symbols["BTC-PERP"].brackets]
    assert offsets == [0, 50_000_000, 1_300_000_000, 16_300_000_000, 266_300_000_000]


def test_params_version_is_the_first_16_hex_digits_of_the_file_sha256():
    import hashlib

    text = params_toml().encode()
    assert parse_params(text).params_version == hashlib.sha256(text).hexdigest()[:16]


@pytest.mark.parametrize(
    "overrides, named_key",
    [
        pytest.param({"extra": "[engine2]\nx = 1"}, "engine2", id="an unknown top-level table is named"),
        pytest.param({"liquidator_ppm": 700_000, "protocol_ppm": 400_000}, "split.protocol_ppm",
                     id="shares above one million are refused"),
        pytest.param({"btc_brackets": '[{max_notional = "250000", mmr_ppm = 4000},'
                                      ' {max_notional = "50000", mmr_ppm = 5000}, {mmr_ppm = 10000}]'},
                     "symbols.BTC-PERP.brackets[1].max_notional", id="unsorted brackets are refused"),
        pytest.param({"btc_brackets": '[{max_notional = "50000", mmr_ppm = 5000}, {mmr_ppm = 4000}]'},
                     "symbols.BTC-PERP.brackets[1].mmr_ppm", id="a falling maintenance rate is refused"),
        pytest.param({"btc_brackets": '[{mmr_ppm = 4000, max_notional = "1"}]'},
                     "symbols.BTC-PERP.brackets[0].max_notional", id="the last bracket must not have a maximum"),
        pytest.param({"btc_penalty": '{model = "severity", min_ppm = 1000, max_ppm = 5000}'},
                     "symbols.BTC-PERP.brackets[0].mmr_ppm",
                     id="partial mode refuses a penalty the buffer cannot outgrow"),
        pytest.param({"btc_penalty": '{model = "linear", min_ppm = 0}'}, "symbols.BTC-PERP.penalty.model",
                     id="an unknown penalty model is named"),
        pytest.param({"mode": "half"}, "liquidation.mode", id="an unknown liquidation mode is named"),
        pytest.param({"floor": "20", "extra": '[loss_sharing]\nrepay_above = "19.999999"'},
                     "loss_sharing.repay_above", id="repay_above below the fund's floor is refused"),
        pytest.param({"extra": '[loss_sharing]\nmode = "adl"'}, "loss_sharing.mode",
                     id="an unknown loss-sharing mode is named"),
        pytest.param({"extra": '[loss_sharing]\nround_interval_ms = -1'}, "loss_sharing.round_interval_ms",
                     id="a negative round interval is named"),
        pytest.param({"extra": '[loss_sharing]\nrepay_at = "1"'}, "loss_sharing.repay_at",
                     id="an unknown loss-sharing key is named"),
        pytest.param({"btc_min_notional": "1.0000001"}, "symbols.BTC-PERP.min_notional",
                     id="an amount with more decimals than the settlement scale is refused"),
        pytest.param({"extra": "[symbols.SOL-PERP]\nprice_decimals = 2\nsize_decimals = 1\nbrackets = [{mmr_ppm = 5000}]\nleverage = 3"},
                     "symbols.SOL-PERP.leverage", id="an unknown symbol key is named"),
    ],
)
def test_params_refused_with_the_key_named(overrides, named_key):
    with pytest.raises(ParamsError) as caught:
        parse_params(params_toml(**overrides).encode())
    assert str(caught.value).startswith(named_key)


def test_a_fund_may_start_below_its_floor_and_repay_above_may_equal_it():
    params = make_params(initial_balance="10", floor="20",
                         extra='[loss_sharing]\nmode = "haircut"\nrepay_above = "20"\nround_interval_ms = 0')
    assert (params.insurance_initial_units, params.insurance_floor_units) == (10_000_000, 20_000_000)
    assert (params.loss_sharing_mode, params.repay_above_units, params.round_interval_ms) == ("haircut", 20_000_000, 0)
    default = make_params()
    assert (default.loss_sharing_mode, default.repay_above_units, default.round_interval_ms) == ("record", None, 1000)


def test_full_mode_accepts_a_penalty_partial_mode_refuses():
    params = make_params(mode="full", btc_penalty='{model = "severity", min_ppm = 1000, max_ppm = 5000}')
    assert params.symbols["BTC-PERP"].penalty_max_ppm == 5000


def test_example_params_load():
    from tests.fixtures import EXAMPLES
    from worker.core.params import load_params

    params = load_params(str(EXAMPLES / "params.toml"))
    assert set(params.symbols) == {"BTC-PERP", "ETH-PERP"}
    assert params.insurance_floor_units == 100_000_000
