// The prompt and settings fields: read into an A1111 request, filled from defaults or from a PNG's parameters.
import {$} from "./api.js";

export function readSettings() {
  return {
    prompt: $("prompt").value,
    negative_prompt: $("negative-prompt").value,
    sampler_name: $("sampler").value,
    steps: Number($("steps").value),
    cfg_scale: Number($("cfg-scale").value),
    seed: Number($("seed").value),
    width: Number($("width").value),
    height: Number($("height").value),
    batch_size: Number($("batch-size").value),
  };
}

export function fillSamplers(samplers, chosen) {
  const select = $("sampler");
  select.replaceChildren(...samplers.map((s) => new Option(s.name, s.name)));
  if (chosen) select.value = chosen;
}

export function applyDefaults(defaults) {
  $("width").value = defaults.width;
  $("height").value = defaults.height;
  for (const id of ["width", "height"]) $(id).step = defaults.size_step;
  $("steps").value = defaults.steps;
  $("cfg-scale").value = defaults.cfg_scale;
  $("batch-size").value = defaults.batch_size;
  $("sampler").value = defaults.sampler_name;
  $("model-name").textContent = `model: ${defaults.model}`;
}

// Parameters as /sdapi/v1/png-info parses them ("Prompt", "Steps", "Size-1", ...) -> the fields.
export function applyParameters(p) {
  $("prompt").value = p["Prompt"] ?? "";
  $("negative-prompt").value = p["Negative prompt"] ?? "";
  const numbers = {"Steps": "steps", "CFG scale": "cfg-scale", "Seed": "seed", "Size-1": "width", "Size-2": "height"};
  for (const [key, id] of Object.entries(numbers)) if (p[key] !== undefined) $(id).value = Number(p[key]);
  if (p["Sampler"]) $("sampler").value = p["Sampler"];
  $("batch-size").value = 1;
}
