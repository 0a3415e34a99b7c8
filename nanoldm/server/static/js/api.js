// Talking to the server: A1111's /sdapi/v1 routes and nanoldm's /nanoldm/v1 ones (same origin, so a browser
// that logged in with basic auth sends its credentials along).

export async function api(path, body) {
  const options = body === undefined ? {} : {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body),
  };
  const response = await fetch(path, options);
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!response.ok) {
    const detail = data && typeof data.detail === "string" ? data.detail : text.slice(0, 300);
    const prefix = response.status === 503 ? "The server is busy: " : "";
    throw new Error(prefix + (detail || `the server answered ${response.status}`));
  }
  return data;
}

export const pngUrl = (base64) => `data:image/png;base64,${base64}`;

// A file the user dropped or chose -> a data URL, and its bare base64 part.
export function readFile(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(new Error(`could not read ${file.name}`));
    reader.readAsDataURL(file);
  });
}

export const base64Of = (dataUrl) => dataUrl.slice(dataUrl.indexOf(",") + 1);

// A drop zone (and its file input) that hands the first file to `onFile`.
export function dropZone(zone, input, onFile) {
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    if (event.dataTransfer.files.length) onFile(event.dataTransfer.files[0]);
  });
  input.addEventListener("change", () => { if (input.files.length) onFile(input.files[0]); });
}

export const $ = (id) => document.getElementById(id);
