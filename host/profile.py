"""Device profiles: the integer arithmetic a device runs, as explicit data that reads like a spec.

A profile says, step by step, what the device computes for a conv / fully connected output:

    products   p_k = x_k * w_k                       exact (int8 operands: |p| < 2^15)
    blocks     s_j = sum of the products k in [j*B, (j+1)*B)   exact; B = 0: one block of all
               s_j = saturate(round_shift(s_j, acc_shift, accumulator.block_rounding), accumulator.bits)
    running    acc = saturate(acc + s_j, accumulator.bits)       for j = 0, 1, ...
    bias       acc = saturate(acc + bias, accumulator.bits)
    requant    out = requant(acc)                                 see Requant
    clamp      out = clamp(out, act_min, act_max)                 saturation + fused ReLU

Products are taken in the device order of the weights (ky, kx, ic for a conv, NHWC features for a
dense layer); conv padding positions count as zero products (they keep their place in a block).
The trainer (train/layers.py), the host reference (reference.py) and the firmware (the header's
CQTF_ARITH_* constants, kernels/cqtf_fixed.h) all read the same profile; the model stores its
profile's parameters (model_ir.IntModel.arithmetic) and hashes them.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum

from cqtf.errors import DataError


class Rounding(str, Enum):
    """How x / 2^e is rounded to an integer (e > 0). The C twin: cqtf_round_shift in kernels/cqtf_fixed.h."""

    HALF_UP = "half_up"  # floor(x / 2^e + 1/2)             (the CQTF paper's RN)
    HALF_AWAY = "half_away"  # ties away from zero
    HALF_EVEN = "half_even"  # ties to the even neighbour (banker's)
    FLOOR = "floor"  # toward -infinity: an arithmetic shift     (RF)
    CEIL = "ceil"  # toward +infinity                             (RC)


class Requant(str, Enum):
    """From the accumulator to the output tensor."""

    TFLM_DOUBLE = "tflm_double"  # int8: Q31 multiplier and shift, rounded twice (TFLite Micro)
    SINGLE = "single"  # int8: round(acc * M * 2^(shift - 31)) once, with Requantizer.rounding
    SHIFT = "shift"  # fixed point: round_shift(acc, acc_frac - out_frac, rounding), saturated


@dataclass(frozen=True)
class AffineInt8:
    """int8 affine: real = (q - zero_point) * scale; weights symmetric per output channel in [-127, 127]."""

    kind: str = "affine_int8"
    bits: int = 8


@dataclass(frozen=True)
class FixedPoint:
    """Signed fixed point: real = q * 2^-frac_bits, q saturated to +-(2^(total_bits-1) - 1).

    frac_bits None: chosen per tensor at calibration (largest that does not saturate the range seen)."""

    total_bits: int = 8
    frac_bits: int | None = None
    kind: str = "fixed"

    def __post_init__(self):
        if not 4 <= self.total_bits <= 16:
            raise ValueError(f"fixed point total bits must be in 4..16, got {self.total_bits}")
        if self.frac_bits is not None and not 0 <= self.frac_bits < 32:
            raise ValueError(f"fraction bits must be in 0..31, got {self.frac_bits}")

    @property
    def qmax(self) -> int:
        return (1 << (self.total_bits - 1)) - 1


@dataclass(frozen=True)
class PowerOfTwo:
    """Power-of-two weights (n-BQ-NN): every weight is 0 or +-2^e, e in [0, max_exp], in units of
    2^-frac_bits, so every multiply is a shift. A weight's code has `bits` bits: the sign on top
    (1 = negative), below it the exponent field m: m = 0 is zero, m >= 1 is 2^(m - 1). With 4 bits:
    {0, +-1, +-2, ..., +-64}, max_exp = 6 (code 0b1000, a negative zero, is never written).

    frac_bits None: chosen per layer, the largest with max|w| * 2^f <= 2^max_exp (cqtf.pow2)."""

    bits: int = 4
    frac_bits: int | None = None
    kind: str = "power_of_two"

    def __post_init__(self):
        if not 3 <= self.bits <= 5:
            raise ValueError(f"power-of-two weight codes must have 3..5 bits, got {self.bits}")
        if self.frac_bits is not None and not 0 <= self.frac_bits < 32:
            raise ValueError(f"fraction bits must be in 0..31, got {self.frac_bits}")

    @property
    def max_exp(self) -> int:
        return (1 << (self.bits - 1)) - 2

    @property
    def qmax(self) -> int:
        return 1 << self.max_exp


@dataclass(frozen=True)
class Accumulator:
    bits: int = 32  # the running accumulator saturates to this many signed bits
    block: int = 0  # products summed exactly per block before rounding; 0 = the whole dot product
    block_rounding: Rounding = Rounding.HALF_UP  # of each block's sum by acc_shift (when acc_shift > 0)
    frac_bits: int | None = None  # fixed point only; None = exact: input + weight fraction bits

    def __post_init__(self):
        if not 8 <= self.bits <= 32:
            raise ValueError(f"accumulator bits must be in 8..32, got {self.bits}")
        if not 0 <= self.block <= 255:
            raise ValueError(f"block must be in 0..255, got {self.block}")

    @property
    def max(self) -> int:
        return (1 << (self.bits - 1)) - 1

    @property
    def min(self) -> int:
        return -(1 << (self.bits - 1))


@dataclass(frozen=True)
class Requantizer:
    kind: Requant = Requant.TFLM_DOUBLE
    rounding: Rounding = Rounding.HALF_AWAY  # SINGLE and SHIFT; TFLM_DOUBLE has its own fixed rounding


@dataclass(frozen=True)
class Profile:
    name: str
    activations: AffineInt8 | FixedPoint
    weights: AffineInt8 | FixedPoint | PowerOfTwo
    accumulator: Accumulator = field(default_factory=Accumulator)
    requant: Requantizer = field(default_factory=Requantizer)
    saturate: bool = True  # outputs saturate to the activation format (never wrap)
    description: str = ""

    @property
    def is_fixed(self) -> bool:
        return isinstance(self.activations, FixedPoint)

    def to_dict(self) -> dict:
        """The parameters that determine the device's integers (stored in model.npz and hashed)."""
        d = asdict(self)
        d.pop("description")
        return _plain(d)

    @staticmethod
    def from_dict(d: dict) -> "Profile":
        def fmt(x: dict):
            x = dict(x)
            kind = x.pop("kind")
            if kind == "power_of_two":
                return PowerOfTwo(**x)
            return AffineInt8(**x) if kind == "affine_int8" else FixedPoint(**x)

        acc = dict(d["accumulator"])
        acc["block_rounding"] = Rounding(acc["block_rounding"])
        req = d["requant"]
        return Profile(name=d["name"], activations=fmt(d["activations"]), weights=fmt(d["weights"]),
                       accumulator=Accumulator(**acc),
                       requant=Requantizer(Requant(req["kind"]), Rounding(req["rounding"])),
                       saturate=d["saturate"])


def _plain(value):
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


_FIXED8 = FixedPoint(total_bits=8)
_Q8_5 = FixedPoint(total_bits=8, frac_bits=5)

PRESETS: dict[str, Profile] = {p.name: p for p in (
    Profile("int8", AffineInt8(), AffineInt8(), Accumulator(32),
            Requantizer(Requant.TFLM_DOUBLE, Rounding.HALF_AWAY),
            description="TFLite Micro int8: per-channel weights, int32 accumulator, double rounding"),
    Profile("int8-single", AffineInt8(), AffineInt8(), Accumulator(32),
            Requantizer(Requant.SINGLE, Rounding.HALF_UP),
            description="int8 affine requantized with one rounding (TFLite host / CMSIS-NN single rounding)"),
    Profile("fixed8", _FIXED8, _FIXED8, Accumulator(32),
            Requantizer(Requant.SHIFT, Rounding.HALF_UP),
            description="8-bit Q format, fraction bits per tensor, exact 32-bit accumulator, rounding shift"),
    Profile("fixed8-acc16", _FIXED8, _FIXED8, Accumulator(16, block=1),
            Requantizer(Requant.SHIFT, Rounding.HALF_UP),
            description="8-bit Q format, 16-bit accumulator saturating after every product"),
    Profile("fixed8-blk32", _Q8_5, _Q8_5, Accumulator(8, block=32, block_rounding=Rounding.HALF_UP, frac_bits=5),
            Requantizer(Requant.SHIFT, Rounding.HALF_UP),
            description="CQTF: Q8.5 everywhere, blocks of 32 exact products rounded half-up and saturated"),
    Profile("fixed8-floor", _FIXED8, _FIXED8, Accumulator(32),
            Requantizer(Requant.SHIFT, Rounding.FLOOR),
            description="8-bit Q format requantized by a plain arithmetic shift (floor), as many DSP kernels do"),
    Profile("pot4", _FIXED8, PowerOfTwo(bits=4), Accumulator(32),
            Requantizer(Requant.SHIFT, Rounding.HALF_UP),
            description="n-BQ-NN: 4-bit power-of-two weights (shifts, no multiplies), 8-bit Q activations, "
                        "exact 32-bit accumulator, rounding shift"),
    Profile("wageubn8", _FIXED8, _FIXED8, Accumulator(32),
            Requantizer(Requant.SHIFT, Rounding.HALF_UP),
            description="fixed8's device arithmetic, trained WAGEUBN-style: 8-bit gradients, errors, updates"),
)}

# How each preset trains beyond the device-exact forward pass (kept out of Profile: not device arithmetic,
# not hashed). "wageubn": quantized gradients, errors, momentum and updates (cqtf.train.wageubn).
TRAINING: dict[str, str] = {"wageubn8": "wageubn"}

# What the packer and the firmware implement (8-bit tensors: the device stores activations as int8).
FIRMWARE_PROFILES: tuple[str, ...] = tuple(PRESETS)


def get_profile(name: str) -> Profile:
    if name not in PRESETS:
        raise DataError(f"unknown profile '{name}'", f"choose one of: {', '.join(PRESETS)}")
    return PRESETS[name]


# Codes of the firmware's cqtf_requant_kind_t and cqtf_rounding_t (firmware/src/cqtf_types.h).
REQUANT_CODES = {Requant.TFLM_DOUBLE: 0, Requant.SINGLE: 1, Requant.SHIFT: 2}
ROUNDING_CODES = {Rounding.HALF_UP: 0, Rounding.HALF_AWAY: 1, Rounding.HALF_EVEN: 2, Rounding.FLOOR: 3,
                  Rounding.CEIL: 4}
# Codes of cqtf_weight_kind_t: how cqtf_layer_t.weights is stored (0, int8 values, is implied when absent).
WEIGHT_KIND_CODES = {"int8": 0, "pot4": 1}


def firmware_constants(profile: Profile) -> dict[str, int]:
    """The CQTF_MODEL_ARITH_* constants (and cqtf_arith_t fields) of a profile, for the packer.
    Raises DataError for a profile the firmware does not implement."""
    bits = profile.activations.bits if isinstance(profile.activations, AffineInt8) else profile.activations.total_bits
    pot = isinstance(profile.weights, PowerOfTwo)
    wbits = profile.weights.total_bits if isinstance(profile.weights, FixedPoint) else profile.weights.bits
    if bits != 8 or wbits != (4 if pot else 8) or (pot and profile.requant.kind != Requant.SHIFT):
        raise DataError(f"profile '{profile.name}' has {bits}-bit activations and {wbits}-bit weights",
                        "the firmware stores 8-bit tensors (power-of-two weights: 4-bit codes with "
                        "fixed-point activations): use such a profile")
    weight_kind = {"WEIGHT_KIND": WEIGHT_KIND_CODES["pot4"]} if pot else {}  # int8 headers stay as they were
    return {
        "REQUANT": REQUANT_CODES[profile.requant.kind],
        "ACT_BITS": 8,
        "ACC_BITS": profile.accumulator.bits,
        "BLOCK": profile.accumulator.block,
        "BLOCK_ROUNDING": ROUNDING_CODES[profile.accumulator.block_rounding],
        "OUT_ROUNDING": ROUNDING_CODES[profile.requant.rounding],
        **weight_kind,
    }


def average_rounding(profile: Profile) -> Rounding:
    """How average pooling rounds its window mean: TFLM's half away from zero for the int8 profiles,
    the profile's own output rounding for fixed point (C: kernels/cqtf_avgpool2d.c)."""
    return profile.requant.rounding if profile.requant.kind == Requant.SHIFT else Rounding.HALF_AWAY


def add_single_rounding(profile: Profile) -> Rounding | None:
    """int8 ADD rescaling: None for TFLM's double rounding, else the single-rounding profile's mode."""
    return profile.requant.rounding if profile.requant.kind == Requant.SINGLE else None
