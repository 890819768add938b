// gantry's pages: the live, virtualized step log, and live status on build pages and lists.
// Plain JavaScript, no dependencies.
(function () {
  'use strict';

  function escapeHtml(s) {
    return s.replace(/[&<>"']/g, function (c) {
      return { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c];
    });
  }

  function statusHtml(s) {
    return '<span class="status s-' + s + '" title="' + s + '"><span class="icon" aria-hidden="true"></span>' + s + '</span>';
  }

  function took(started, finished) {
    if (!started) return '';
    if (!finished) return 'running';
    var secs = Math.max(0, Math.floor((finished - started) / 1000));
    if (secs >= 3600) return Math.floor(secs / 3600) + 'h ' + String(Math.floor(secs % 3600 / 60)).padStart(2, '0') + 'm';
    if (secs >= 60) return Math.floor(secs / 60) + 'm ' + String(secs % 60).padStart(2, '0') + 's';
    return secs + 's';
  }

  // ----- ANSI colours and styles, with the state carried from line to line -------------

  var BASE = ['#484f58', '#ff7b72', '#3fb950', '#d29922', '#58a6ff', '#bc8cff', '#39c5cf', '#b1bac4'];
  var BRIGHT = ['#6e7681', '#ffa198', '#56d364', '#e3b341', '#79c0ff', '#d2a8ff', '#56d4dd', '#ffffff'];

  function color256(n) {
    if (n < 8) return BASE[n];
    if (n < 16) return BRIGHT[n - 8];
    if (n < 232) {
      n -= 16;
      var v = [0, 95, 135, 175, 215, 255];
      return 'rgb(' + v[Math.floor(n / 36)] + ',' + v[Math.floor(n / 6) % 6] + ',' + v[n % 6] + ')';
    }
    var g = 8 + (n - 232) * 10;
    return 'rgb(' + g + ',' + g + ',' + g + ')';
  }

  function freshState() {
    return { fg: null, bg: null, bold: false, dim: false, italic: false, underline: false };
  }

  function applySgr(state, params) {
    var codes = params === '' ? [0] : params.split(';').map(function (x) { return parseInt(x, 10) || 0; });
    for (var i = 0; i < codes.length; i++) {
      var c = codes[i];
      if (c === 0) { var f = freshState(); for (var k in f) state[k] = f[k]; }
      else if (c === 1) state.bold = true;
      else if (c === 2) state.dim = true;
      else if (c === 3) state.italic = true;
      else if (c === 4) state.underline = true;
      else if (c === 22) { state.bold = false; state.dim = false; }
      else if (c === 23) state.italic = false;
      else if (c === 24) state.underline = false;
      else if (c >= 30 && c <= 37) state.fg = BASE[c - 30];
      else if (c === 39) state.fg = null;
      else if (c >= 40 && c <= 47) state.bg = BASE[c - 40];
      else if (c === 49) state.bg = null;
      else if (c >= 90 && c <= 97) state.fg = BRIGHT[c - 90];
      else if (c >= 100 && c <= 107) state.bg = BRIGHT[c - 100];
      else if ((c === 38 || c === 48) && codes[i + 1] === 5) {
        state[c === 38 ? 'fg' : 'bg'] = color256(codes[i + 2] || 0); i += 2;
      } else if ((c === 38 || c === 48) && codes[i + 1] === 2) {
        state[c === 38 ? 'fg' : 'bg'] = 'rgb(' + (codes[i + 2] || 0) + ',' + (codes[i + 3] || 0) + ',' + (codes[i + 4] || 0) + ')';
        i += 4;
      }
    }
  }

  function openSpan(state) {
    var classes = [], style = [];
    if (state.bold) classes.push('ansi-bold');
    if (state.dim) classes.push('ansi-dim');
    if (state.italic) classes.push('ansi-italic');
    if (state.underline) classes.push('ansi-underline');
    if (state.fg) style.push('color:' + state.fg);
    if (state.bg) style.push('background:' + state.bg);
    if (!classes.length && !style.length) return '';
    return '<span' + (classes.length ? ' class="' + classes.join(' ') + '"' : '') +
      (style.length ? ' style="' + style.join(';') + '"' : '') + '>';
  }

  // One line to HTML; `state` is updated for the next line.
  function ansiToHtml(text, state) {
    var cr = text.lastIndexOf('\r');
    if (cr >= 0 && cr < text.length - 1) text = text.slice(cr + 1);
    text = text.replace(/\x1b\][^\x07\x1b]*(\x07|\x1b\\)/g, '');
    var out = '', last = 0, open = openSpan(state), re = /\x1b\[([0-9;?]*)([A-Za-z])/g, m;
    out += open;
    while ((m = re.exec(text)) !== null) {
      out += escapeHtml(text.slice(last, m.index));
      last = re.lastIndex;
      if (m[2] !== 'm') continue;
      if (open) out += '</span>';
      applySgr(state, m[1]);
      open = openSpan(state);
      out += open;
    }
    out += escapeHtml(text.slice(last).replace(/\x1b/g, ''));
    if (open) out += '</span>';
    return out;
  }

  // ----- the step log --------------------------------------------------------------------

  var PAGE = 500;

  function LogView(el) {
    var api = el.dataset.api;
    var total = parseInt(el.dataset.total, 10) || 0;
    var ended = el.dataset.ended === 'true';
    var spacer = el.querySelector('.log-spacer');
    var rows = el.querySelector('.log-rows');
    var lh = parseFloat(getComputedStyle(el).getPropertyValue('--lh')) || 20;
    var pages = new Map();   // page index -> { lines: [], end: ansi state after its last line }
    var loading = new Set();
    var following = !ended;
    var selection = null;    // [from, to]
    var anchor = null;
    var scheduled = false;
    var liveState = null;    // ansi state after the last live line
    var lastLive = 0;

    function pageOf(n) { return Math.floor((n - 1) / PAGE); }

    function page(p) {
      var found = pages.get(p);
      if (!found) { found = { lines: new Array(PAGE), end: null }; pages.set(p, found); }
      return found;
    }

    // Bounded memory: keep the pages near the view.
    function evict(center) {
      if (pages.size <= 40) return;
      pages.forEach(function (_, p) { if (Math.abs(p - center) > 20) pages.delete(p); });
    }

    function store(line, state) {
      var pg = page(pageOf(line.n));
      pg.lines[(line.n - 1) % PAGE] = { t: line.t, html: ansiToHtml(line.text, state) };
      if (line.n > total) total = line.n;
    }

    function load(p) {
      if (loading.has(p) || p < 0) return;
      var existing = pages.get(p);
      if (existing && existing.complete) return;
      loading.add(p);
      fetch(api + '/lines?from=' + (p * PAGE + 1) + '&limit=' + PAGE, { credentials: 'same-origin' })
        .then(function (r) { return r.json(); })
        .then(function (body) {
          var before = pages.get(p - 1);
          var state = before && before.end ? Object.assign({}, before.end) : freshState();
          body.lines.forEach(function (line) { store(line, state); });
          var pg = page(p);
          pg.end = state;
          pg.complete = body.lines.length === PAGE;
          if (body.total > total) total = body.total;
          loading.delete(p);
          evict(p);
          schedule();
        })
        .catch(function () { loading.delete(p); });
    }

    function schedule() {
      if (scheduled) return;
      scheduled = true;
      requestAnimationFrame(function () { scheduled = false; render(); });
    }

    function ts(ms) {
      var s = Math.floor(ms / 1000);
      return String(Math.floor(s / 60)).padStart(2, '0') + ':' + String(s % 60).padStart(2, '0') + '.' + String(ms % 1000).padStart(3, '0');
    }

    function render() {
      spacer.style.height = (total * lh) + 'px';
      if (following) el.scrollTop = el.scrollHeight;
      var first = Math.max(1, Math.floor(el.scrollTop / lh) - 20);
      var last = Math.min(total, Math.ceil((el.scrollTop + el.clientHeight) / lh) + 20);
      var html = [];
      for (var n = first; n <= last; n++) {
        var pg = pages.get(pageOf(n));
        if (!pg) load(pageOf(n));
        var line = pg && pg.lines[(n - 1) % PAGE];
        var hl = selection && n >= selection[0] && n <= selection[1] ? ' hl' : '';
        html.push('<div class="line' + hl + '" id="L' + n + '"><a class="num" data-n="' + n + '" href="#L' + n + '">' + n +
          '</a><span class="ts">' + (line ? ts(line.t) : '') + '</span><span class="text">' +
          (line ? line.html : '') + '</span></div>');
      }
      rows.style.transform = 'translateY(' + ((first - 1) * lh) + 'px)';
      rows.innerHTML = html.join('');
    }

    function parseHash() {
      var m = /^#L(\d+)(?:-L(\d+))?$/.exec(location.hash);
      if (!m) return null;
      var a = parseInt(m[1], 10), b = m[2] ? parseInt(m[2], 10) : a;
      return [Math.min(a, b), Math.max(a, b)];
    }

    function goTo(range) {
      selection = range;
      following = false;
      el.scrollTop = Math.max(0, (range[0] - 1) * lh - el.clientHeight / 3);
      schedule();
    }

    el.addEventListener('scroll', function () {
      following = !ended && el.scrollTop + el.clientHeight >= el.scrollHeight - 2 * lh;
      schedule();
    });

    el.addEventListener('click', function (event) {
      var num = event.target.closest && event.target.closest('.num');
      if (!num) return;
      event.preventDefault();
      var n = parseInt(num.dataset.n, 10);
      var range = event.shiftKey && anchor ? [Math.min(anchor, n), Math.max(anchor, n)] : [n, n];
      if (!event.shiftKey) anchor = n;
      selection = range;
      history.replaceState(null, '', range[0] === range[1] ? '#L' + range[0] : '#L' + range[0] + '-L' + range[1]);
      schedule();
    });

    window.addEventListener('hashchange', function () {
      var range = parseHash();
      if (range) goTo(range);
    });

    var times = document.getElementById('show-times');
    if (times) times.addEventListener('change', function () { el.classList.toggle('show-times', times.checked); });

    function refreshStatus() {
      var buildApi = api.replace(/\/logs\/\d+\/\d+$/, '');
      var parts = /\/logs\/(\d+)\/(\d+)$/.exec(api);
      fetch(buildApi, { credentials: 'same-origin' }).then(function (r) { return r.json(); }).then(function (build) {
        (build.stages || []).forEach(function (stage) {
          if (String(stage.number) !== parts[1]) return;
          stage.steps.forEach(function (step) {
            if (String(step.number) !== parts[2]) return;
            var target = document.getElementById('step-status');
            if (target) target.innerHTML = statusHtml(step.status);
          });
        });
      }).catch(function () {});
    }

    function live() {
      var source = new EventSource(api + '/stream?after=' + total);
      source.addEventListener('line', function (event) {
        var line = JSON.parse(event.data);
        if (line.n <= lastLive) return;
        if (!liveState || line.n !== lastLive + 1) {
          var prev = pages.get(pageOf(line.n));
          liveState = prev && prev.end ? Object.assign({}, prev.end) : freshState();
        }
        store(line, liveState);
        page(pageOf(line.n)).end = Object.assign({}, liveState);
        lastLive = line.n;
        schedule();
      });
      source.addEventListener('end', function () {
        source.close();
        ended = true;
        following = false;
        el.dataset.ended = 'true';
        refreshStatus();
        schedule();
      });
    }

    // The page carries the log's last lines: they show before any request.
    var inline = document.getElementById('log-tail');
    if (inline) {
      try {
        var state = freshState();
        JSON.parse(inline.textContent).forEach(function (line) { store(line, state); });
        if (total > 0) page(pageOf(total)).end = state;
      } catch (e) { /* the lines come from the API instead */ }
    }
    // The full height first, so that scrolling to a line or to the end can reach it.
    spacer.style.height = (total * lh) + 'px';
    var range = parseHash();
    if (range) {
      goTo(range);
    } else {
      // The tail first: the end of a log is what a reader of a failure wants.
      load(pageOf(Math.max(1, total)));
      if (total > PAGE && (total - 1) % PAGE < 100) load(pageOf(total) - 1);
      el.scrollTop = total * lh;
    }
    lastLive = total;
    if (!ended) live();
    schedule();
    el.logView = { total: function () { return total; } };
  }

  // ----- live status on build pages and lists -----------------------------------------

  function liveBuild(section) {
    var api = section.dataset.live;
    function tick() {
      fetch(api, { credentials: 'same-origin' }).then(function (r) { return r.json(); }).then(function (build) {
        var head = section.querySelector('.build-status');
        if (head) head.innerHTML = statusHtml(build.status);
        var tookCell = section.querySelector('dd.took');
        if (tookCell) tookCell.textContent = took(build.started_at, build.finished_at);
        (build.stages || []).forEach(function (stage) {
          var box = section.querySelector('.stage[data-stage="' + stage.number + '"]');
          if (!box) return;
          var title = box.querySelector('h2');
          if (title) title.innerHTML = statusHtml(stage.status) + ' ' + escapeHtml(stage.name);
          stage.steps.forEach(function (step) {
            var row = box.querySelector('tr[data-step="' + step.number + '"]');
            if (!row) return;
            row.querySelector('.st').innerHTML = statusHtml(step.status);
            row.querySelector('.took').textContent = took(step.started_at, step.finished_at);
            row.querySelector('.exit').textContent = step.exit_code === null || step.exit_code === undefined ? '' : 'exit ' + step.exit_code;
          });
        });
        if (build.finished_at) {
          var cancel = document.getElementById('cancel');
          if (cancel) cancel.closest('form').remove();
        } else {
          setTimeout(tick, 1500);
        }
      }).catch(function () { setTimeout(tick, 5000); });
    }
    setTimeout(tick, 1500);
  }

  function liveList(table) {
    var api = table.dataset.live;
    function tick() {
      fetch(api, { credentials: 'same-origin' }).then(function (r) { return r.json(); }).then(function (builds) {
        builds.forEach(function (build) {
          var row = table.querySelector('tr[data-number="' + build.number + '"]');
          if (!row) return;
          row.querySelector('.st').innerHTML = statusHtml(build.status);
          row.querySelector('.took').textContent = took(build.started_at, build.finished_at);
        });
        setTimeout(tick, 3000);
      }).catch(function () { setTimeout(tick, 10000); });
    }
    setTimeout(tick, 3000);
  }

  document.addEventListener('DOMContentLoaded', function () {
    var log = document.getElementById('log');
    if (log) LogView(log);
    var build = document.getElementById('build');
    if (build) liveBuild(build);
    var list = document.getElementById('builds');
    if (list) liveList(list);
  });
})();
