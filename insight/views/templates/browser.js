// The concept browser: the index (search, sort, dead-concept toggle) and image pages
// (click a patch to list its concepts; click a concept to draw its heatmap); concept pages
// (a toggle shows the family's implied edges).
(function () {
  const table = document.getElementById("concepts");
  if (table) {
    const body = table.tBodies[0];
    const search = document.getElementById("search");
    const showDead = document.getElementById("show-dead");
    const count = document.getElementById("count");
    function filter() {
      const query = search.value.trim().toLowerCase();
      let shown = 0;
      for (const row of body.rows) {
        const visible = (!query || row.dataset.search.includes(query)) &&
          (showDead.checked || row.dataset.dead === "0");
        row.hidden = !visible;
        if (visible) shown += 1;
      }
      count.textContent = shown + " of " + body.rows.length + " concepts";
    }
    function sort(header, index) {
      const ascending = !header.classList.contains("sorted-asc");
      for (const h of table.tHead.rows[0].cells) h.classList.remove("sorted-asc", "sorted-desc");
      header.classList.add(ascending ? "sorted-asc" : "sorted-desc");
      const numeric = header.dataset.type === "number";
      const rows = Array.from(body.rows);
      rows.sort(function (a, b) {
        const x = a.cells[index].dataset.value, y = b.cells[index].dataset.value;
        const order = numeric ? Number(x) - Number(y) : x.localeCompare(y);
        return ascending ? order : -order;
      });
      for (const row of rows) body.appendChild(row);
    }
    Array.from(table.tHead.rows[0].cells).forEach(function (header, index) {
      if (!header.classList.contains("nosort")) {
        header.addEventListener("click", function () { sort(header, index); });
      }
    });
    search.addEventListener("input", filter);
    showDead.addEventListener("change", filter);
    filter();
  }

  const dataNode = document.getElementById("image-data");
  if (dataNode) {
    const data = JSON.parse(dataNode.textContent);
    const grid = document.getElementById("grid"), heat = document.getElementById("heat");
    const rows = data.grid[0], cols = data.grid[1];
    const cellW = grid.width / cols, cellH = grid.height / rows;
    const list = document.querySelector("#patch-concepts tbody");
    const title = document.getElementById("patch-title");
    const stops = [[0, 0, 4], [86, 16, 110], [187, 55, 84], [249, 142, 9], [252, 255, 164]];
    function colour(t) {
      const x = Math.max(0, Math.min(1, t)) * (stops.length - 1), i = Math.min(Math.floor(x), stops.length - 2);
      const f = x - i, a = stops[i], b = stops[i + 1];
      return [0, 1, 2].map(function (k) { return Math.round(a[k] + f * (b[k] - a[k])); });
    }
    function drawHeat(concept) {
      const context = heat.getContext("2d");
      context.clearRect(0, 0, heat.width, heat.height);
      const cells = data.heatmaps[concept] || {};
      let peak = 0;
      for (const p in cells) peak = Math.max(peak, cells[p]);
      for (const p in cells) {
        const t = peak > 0 ? cells[p] / peak : 0, c = colour(t);
        context.fillStyle = "rgba(" + c[0] + "," + c[1] + "," + c[2] + "," + (0.25 + 0.5 * t) + ")";
        context.fillRect((p % cols) * cellW, Math.floor(p / cols) * cellH, cellW, cellH);
      }
      document.getElementById("heat-peak").textContent = peak.toFixed(3);
    }
    function showPatch(patch) {
      const context = grid.getContext("2d");
      context.clearRect(0, 0, grid.width, grid.height);
      context.strokeStyle = "rgba(255,255,255,0.35)";
      for (let c = 1; c < cols; c++) { context.beginPath(); context.moveTo(c * cellW, 0); context.lineTo(c * cellW, grid.height); context.stroke(); }
      for (let r = 1; r < rows; r++) { context.beginPath(); context.moveTo(0, r * cellH); context.lineTo(grid.width, r * cellH); context.stroke(); }
      if (patch === null) return;
      context.strokeStyle = "#4dabf7"; context.lineWidth = 3;
      context.strokeRect((patch % cols) * cellW, Math.floor(patch / cols) * cellH, cellW, cellH);
      context.lineWidth = 1;
      const active = data.patches[patch] || [];
      title.textContent = "patch " + patch + " (row " + Math.floor(patch / cols) + ", column " + (patch % cols) + "): " + active.length + " concepts";
      list.replaceChildren();
      for (const item of active) {
        const row = list.insertRow();
        row.dataset.concept = item[0];
        row.dataset.activation = item[1];
        const link = document.createElement("a");
        link.href = "../concepts/" + item[0] + ".html";
        link.textContent = item[0];
        row.insertCell().appendChild(link);
        const name = document.createElement("a");
        name.href = "#"; name.textContent = data.names[item[0]];
        name.addEventListener("click", function (event) { event.preventDefault(); drawHeat(item[0]); });
        row.insertCell().appendChild(name);
        const value = row.insertCell(); value.className = "number"; value.textContent = item[1].toFixed(4);
      }
      if (active.length) drawHeat(active[0][0]);
    }
    grid.addEventListener("click", function (event) {
      const box = grid.getBoundingClientRect();
      const col = Math.floor((event.clientX - box.left) / cellW), row = Math.floor((event.clientY - box.top) / cellH);
      showPatch(row * cols + col);
    });
    for (const link of document.querySelectorAll("a.draw")) {
      link.addEventListener("click", function (event) { event.preventDefault(); drawHeat(link.dataset.concept); });
    }
    showPatch(null);
    if (data.top.length) drawHeat(data.top[0]);
  }

  const showImplied = document.getElementById("show-implied");
  if (showImplied) {
    const family = document.querySelector("svg.family");
    function toggle() { if (family) family.classList.toggle("with-implied", showImplied.checked); }
    showImplied.addEventListener("change", toggle);
    toggle();
  }
})();
