import pytest

from fxquant import FxQuantError, config, target


@pytest.mark.parametrize("bits, activation_max, expected", [
    (8, 255, 7),   # 2 * 255 * 128 > 32767: one bit less
    (8, 127, 8),   # 2 * 127 * 128 = 32512 fits
    (7, 255, 7),
    (4, 255, 4),
])
def test_portable_weight_bits_keep_every_pair_in_int16(bits, activation_max, expected):
    got = target.weight_bits(bits, activation_max, target.PORTABLE)
    assert got == expected
    assert target.pair_fits_int16(activation_max, -2 ** (got - 1), 2 ** (got - 1) - 1)


def test_vnni_keeps_full_range():
    assert target.weight_bits(8, 255, target.VNNI) == 8
    assert not target.pair_fits_int16(255, -128, 127)


def test_unknown_target_is_refused():
    with pytest.raises(FxQuantError, match="unknown target"):
        config.resolve("minmax", "w8a8", "avx2")
    assert config.resolve("minmax").target == target.PORTABLE
