// Extra networks: the embeddings and hypernetworks the server found; a click puts one into the prompt.
import {$, api} from "./api.js";

function insert(text) {
  const prompt = $("prompt");
  const before = prompt.value.trimEnd();
  prompt.value = before ? `${before}, ${text}` : text;
  prompt.focus();
}

function chip(label, title, text) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "chip";
  button.textContent = label;
  button.title = title;
  button.addEventListener("click", () => insert(text));
  return button;
}

export async function loadNetworks() {
  const [embeddings, hypernetworks] = await Promise.all([api("/sdapi/v1/embeddings"), api("/sdapi/v1/hypernetworks")]);
  const chips = [
    ...Object.keys(embeddings.loaded || {}).map((token) => chip(token, `embedding: adds the word ${token}`, token)),
    ...hypernetworks.map((h) => chip(`<hypernet:${h.name}>`, `hypernetwork ${h.name} at strength 1`,
                                     `<hypernet:${h.name}:1>`)),
  ];
  if (chips.length) $("network-list").replaceChildren(...chips);
}
