// The live view: noVNC's RFB client on the websocket the page names (data-ws), view-only unless the
// person takes control (data-control="1": the buttons post to ./control, and the agent waits).
import RFB from "../novnc/core/rfb.js";

const screen = document.getElementById("screen");
const status = document.getElementById("status");
const take = document.getElementById("take");
const release = document.getElementById("release");
const controlUrl = new URL("../control", import.meta.url);
let holding = false;

function say(text) {
  status.textContent = text;
}

const rfb = new RFB(screen, screen.dataset.ws);
rfb.viewOnly = true;
rfb.scaleViewport = true;
rfb.focusOnClick = false;
rfb.background = "#222";
// Loopback: bandwidth is free, so the best JPEG quality and light compression (less CPU per frame).
rfb.qualityLevel = 9;
rfb.compressionLevel = 1;

function label(canvas) {
  canvas.setAttribute("role", "img");
  canvas.setAttribute("aria-label", screen.getAttribute("aria-label"));
}

rfb.addEventListener("connect", () => {
  const canvas = screen.querySelector("canvas");
  if (canvas) label(canvas);
  document.body.dataset.connected = "1";
  say(screen.dataset.control === "1" ? "Connected: watching. Take control to use the mouse and keyboard." : "Connected: view only.");
  if (take) take.disabled = false;
});
rfb.addEventListener("disconnect", (e) => {
  document.body.dataset.connected = "0";
  say(e.detail.clean ? "Disconnected: the sandbox has closed." : "Connection lost.");
  if (take) take.disabled = true;
});

async function setControl(want) {
  const reply = await fetch(controlUrl, { method: "POST", body: want ? "take" : "release" });
  if (!reply.ok) {
    say("The server refused: " + (await reply.text()));
    return;
  }
  holding = (await reply.json()).held;
  rfb.viewOnly = !holding;
  rfb.focusOnClick = holding;
  take.hidden = holding;
  release.hidden = !holding;
  const canvas = screen.querySelector("canvas");
  if (canvas) canvas.tabIndex = holding ? 0 : -1;
  document.body.dataset.holding = holding ? "1" : "0";
  if (holding) {
    say("You have control: the agent waits until you give it back.");
    rfb.focus();
  } else {
    say("The agent has control again: watching.");
    take.focus();
  }
}

if (take) {
  take.disabled = true;
  take.addEventListener("click", () => setControl(true));
  release.addEventListener("click", () => setControl(false));
  // Leaving the page gives control back: no one would be left to do it.
  window.addEventListener("pagehide", () => {
    if (holding) navigator.sendBeacon(controlUrl, "release");
  });
}
