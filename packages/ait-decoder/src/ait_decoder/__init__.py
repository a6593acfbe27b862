"""ait_decoder: the AiT neck + token decoder, vocabulary layout, sequences, cached and parallel decoding."""

from ait_decoder.decoder import AiTDecoder, DecoderConfig, DecodingState
from ait_decoder.generation import GenerationOutput, generate
from ait_decoder.layers import DECODING_WEIGHTS, StepLinear
from ait_decoder.neck import Memory, Neck
from ait_decoder.positional import sine_coordinate_codes, sine_positions_2d
from ait_decoder.sampling import greedy, soft_embedding, top_p_filter, top_p_sample
from ait_decoder.vocab import VocabLayout

__all__ = [
    "DECODING_WEIGHTS",
    "AiTDecoder",
    "DecoderConfig",
    "DecodingState",
    "GenerationOutput",
    "Memory",
    "Neck",
    "StepLinear",
    "VocabLayout",
    "generate",
    "greedy",
    "sine_coordinate_codes",
    "sine_positions_2d",
    "soft_embedding",
    "top_p_filter",
    "top_p_sample",
]
