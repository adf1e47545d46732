(function () {
  function value(cell, numeric) {
    var v = cell.getAttribute("data-v");
    if (v === null || v === "") return null;
    if (!numeric) return v.toLowerCase();
    var x = parseFloat(v);
    return isNaN(x) ? null : x;
  }
  function sortTable(table, key, dir) {
    var heads = table.tHead.rows[0].cells, col = -1;
    for (var i = 0; i < heads.length; i++) if (heads[i].getAttribute("data-key") === key) col = i;
    if (col < 0) return;
    var numeric = heads[col].getAttribute("data-type") === "num";
    var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = value(a.cells[col], numeric), y = value(b.cells[col], numeric);
      if (x === null || y === null) return (x === null) - (y === null);
      var c = x < y ? -1 : (x > y ? 1 : 0);
      return dir === "asc" ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
    for (var j = 0; j < heads.length; j++) heads[j].removeAttribute("aria-sort");
    heads[col].setAttribute("aria-sort", dir === "asc" ? "ascending" : "descending");
  }
  var tables = document.querySelectorAll("table.sortable");
  Array.prototype.forEach.call(tables, function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) {
      th.addEventListener("click", function () {
        var dir = th.getAttribute("aria-sort") === "ascending" ? "desc" : "asc";
        sortTable(table, th.getAttribute("data-key"), dir);
      });
    });
  });
  var m = /^#sort=([A-Za-z0-9_-]+):([A-Za-z0-9_]+):(asc|desc)$/.exec(window.location.hash);
  if (m && document.getElementById(m[1])) sortTable(document.getElementById(m[1]), m[2], m[3]);
})();
