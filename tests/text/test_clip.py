"""Our CLIP text tower against transformers' CLIPTextModel with the same random weights."""
import pytest
import torch

from nanoldm.config import SD_V1, TextEncoderConfig
from nanoldm.text.clip import CLIPTextEncoder
from tests.conftest import TINY_TEXT

from tests.reference import reference_text




def _ours_from(ref, cfg):
    ours = CLIPTextEncoder(cfg).eval()
    state = {k.removeprefix("text_model."): v for k, v in ref.state_dict().items() if not k.endswith("position_ids")}
    ours.load_state_dict(state, strict=True)
    return ours


@pytest.mark.parametrize("activation", ["quick_gelu", "gelu"])
def test_hidden_states_match_transformers(activation):
    cfg = TextEncoderConfig(**{**TINY_TEXT.__dict__, "activation": activation})
    ref = reference_text(cfg)
    ours = _ours_from(ref, cfg)
    ids = torch.randint(0, cfg.vocab_size, (3, 77))
    with torch.no_grad():
        out = ref(ids, output_hidden_states=True)
        assert (ours(ids) - out.last_hidden_state).abs().max() <= 1e-4
        # penultimate layer, raw and with the final layer norm (A1111's "Clip skip: 2")
        assert (ours(ids, clip_skip=2, final_norm=False) - out.hidden_states[-2]).abs().max() <= 1e-4
        normed = ref.final_layer_norm(out.hidden_states[-2]) if hasattr(ref, "final_layer_norm") \
            else ref.text_model.final_layer_norm(out.hidden_states[-2])
        assert (ours(ids, clip_skip=2) - normed).abs().max() <= 1e-4


def test_is_causal():
    """A token's hidden state never depends on the tokens after it."""
    model = CLIPTextEncoder(TINY_TEXT).eval()
    a = torch.randint(0, 1000, (1, 10))
    b = a.clone()
    b[0, 6:] = 7
    with torch.no_grad():
        torch.testing.assert_close(model(a)[:, :6], model(b)[:, :6])


def test_sd_v1_text_tower_layout():
    with torch.device("meta"):
        state = CLIPTextEncoder(SD_V1.text).state_dict()
    assert len(state) == 196
    assert state["embeddings.token_embedding.weight"].shape == (49408, 768)


def test_bad_arguments():
    model = CLIPTextEncoder(TINY_TEXT)
    with pytest.raises(ValueError, match="clip_skip"):
        model(torch.zeros(1, 77, dtype=torch.long), clip_skip=3)
    with pytest.raises(ValueError, match="78 tokens"):
        model(torch.zeros(1, 78, dtype=torch.long))
