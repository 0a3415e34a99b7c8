"""The LoRA trainer on the tiny model: kohya's placement and initialisation, the adapted weights are the merged
ones (the sampling fast paths too) and come back bit for bit, only the adapters learn, an export reads back equal."""
import math

import torch
from torch import nn

from nanoldm.data.latents import build_latent_cache
from nanoldm.data.sources import ImageSource
from nanoldm.finetune.lora_file import lora_delta, read_lora
from nanoldm.layers.frozen import frozen_weights
from nanoldm.training.lora import LoraTask, LoraTraining, train_lora
from nanoldm.training.lora_network import LoraNetwork, LoraSpec, lora_targets
from nanoldm.training.loop import TrainConfig, train
from nanoldm.training.state import read_checkpoint
from tests.conftest import TINY


def unet_output(model, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 4, 4, 4, generator=g)
    context = torch.randn(2, 77, TINY.unet.context_dim, generator=g)
    with torch.no_grad():
        return model.unet(x, torch.tensor([10, 500]), context)


def randomise(network: LoraNetwork) -> None:
    """Non-zero ``up`` weights, as after training."""
    with torch.no_grad():
        for adapter in network.adapters.values():
            adapter.up.normal_(0, 0.1)


def test_kohya_targets_and_ranks(model):
    unet_only = lora_targets(model, LoraSpec(rank=4))
    names = {p.rsplit(".", 1)[-1] for p in unet_only}
    assert names == {"proj_in", "to_q", "to_k", "to_v", "0", "proj", "2", "proj_out"}
    assert all(".attentions." in p and p.startswith("unet.") for p in unet_only)
    locon = lora_targets(model, LoraSpec(rank=4, conv_rank=2, targets=("unet", "text")))
    convs = {p: r for p, (layer, r, _) in locon.items() if isinstance(layer, nn.Conv2d) and layer.kernel_size == (3, 3)}
    assert convs and set(convs.values()) == {2}
    assert "unet.down_blocks.0.downsamplers.0.conv" in convs and "unet.up_blocks.0.upsamplers.0.conv" in convs
    assert "unet.conv_in" not in locon and "unet.down_blocks.0.resnets.0.time_emb_proj" in locon
    text = {p.rsplit(".", 1)[-1] for p in locon if p.startswith("text_encoder.")}
    assert text == {"q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"}


def test_adapters_start_at_the_base_model_as_kohya_initialises_them(model):
    base = unet_output(model)
    network = LoraNetwork(model, LoraSpec(rank=4, alpha=2, conv_rank=2))
    network.attach()
    assert torch.equal(unet_output(model), base)  # up starts at zero
    adapter = network.adapter("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q")
    assert adapter.scale == 0.5 and not adapter.up.any()
    bound = 1 / math.sqrt(adapter.down.shape[1])  # kaiming_uniform(a=sqrt(5)) = U(-1/sqrt(fan_in), ...)
    assert adapter.down.abs().max() <= bound and adapter.down.abs().max() > 0.8 * bound
    conv = network.adapter("unet.down_blocks.0.resnets.0.conv1")
    assert conv.down.shape[1:] == (32, 3, 3) and conv.up.shape[1:] == (2, 1, 1)


def test_attached_equals_the_merged_weights_and_detach_restores_them_bitwise(model):
    network = LoraNetwork(model, LoraSpec(rank=4, alpha=8, conv_rank=2, conv_alpha=1))
    randomise(network)
    before = {k: v.clone() for k, v in model.unet.state_dict().items()}
    base = unet_output(model)
    network.attach()
    adapted = unet_output(model)
    assert not torch.allclose(adapted, base, atol=1e-3)
    with frozen_weights():  # the sampling fast paths read weights: they see the LoRA too
        torch.testing.assert_close(unet_output(model), adapted, rtol=1e-4, atol=1e-5)
    network.detach()
    assert model.unet.state_dict().keys() == before.keys()
    assert all(torch.equal(before[k], v) for k, v in model.unet.state_dict().items())
    assert torch.equal(unet_output(model), base)
    with torch.no_grad():  # W + scale * up @ down written into the weights by hand: the same function
        for path, m in network.lora_weights().items():
            weight = network.layers[path].weight
            weight += lora_delta(m, weight.shape)
    torch.testing.assert_close(unet_output(model), adapted, rtol=1e-4, atol=1e-5)


def test_only_the_adapters_train_and_the_loss_falls(model, data, tmp_path):
    cache = build_latent_cache(*data, model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    network = LoraNetwork(model, LoraSpec(rank=4, conv_rank=2))
    task = LoraTask(model, cache, network)

    def fixed_loss() -> float:
        with torch.no_grad():
            return sum(task.loss(torch.arange(24), torch.Generator().manual_seed(s)).item() for s in range(4)) / 4

    loss0 = fixed_loss()
    train(task, TrainConfig(steps=20, batch_size=8, lr=1e-2, checkpoint_every=1000, out_dir=str(tmp_path)),
          progress=False)
    assert fixed_loss() < 0.95 * loss0
    task.finish()
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # UNet, VAE and text encoder frozen
    assert all(a.up.any() for a in network.adapters.values())


def test_exported_file_reads_back_equal(model, tmp_path):
    """Kohya's layout (the PEFT one is checked against diffusers in test_lora_parity.py)."""
    options = LoraTraining(name="my lora", spec=LoraSpec(rank=2, alpha=1, conv_rank=2, targets=("unet", "text")),
                           format="kohya")
    loop = TrainConfig(steps=2, batch_size=2, lr=1e-2, out_dir=str(tmp_path), seed=3)
    path = train_lora(model, ImageSource("shapes", count=8, size=16), loop, options)
    assert path == tmp_path / "my lora.safetensors"
    network = LoraNetwork(model, options.spec)
    tensors, _ = read_checkpoint(tmp_path / "checkpoint.safetensors")
    network.load_state_dict({k[len("model.lora."):]: v for k, v in tensors.items() if k.startswith("model.lora.")})
    weights, meta = read_lora(path, model.config)
    assert set(weights) == set(network.paths) and any(p.startswith("text_encoder.") for p in weights)
    for p, m in network.lora_weights().items():
        assert m.up.any()  # trained, the text encoder's adapters too
        assert torch.equal(weights[p].down, m.down) and torch.equal(weights[p].up, m.up)
        assert weights[p].alpha == m.alpha
    assert (meta["ss_network_module"], meta["ss_network_dim"], meta["ss_network_alpha"], meta["ss_steps"],
            meta["ss_output_name"], meta["ss_base_model_version"], meta["ss_v2"]) == \
        ("networks.lora", "2", "1.0", "2", "my lora", "sd_v1", "False")
    assert meta["ss_network_args"] == '{"conv_dim": "2", "conv_alpha": "2"}'
    assert float(meta["ss_training_started_at"]) <= float(meta["ss_training_finished_at"])
