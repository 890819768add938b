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

  // One line to HTML; `state` is updated for the next line. With `mark` (a global RegExp),
  // its matches in each run of text are marked.
  function ansiToHtml(text, state, mark) {
    var cr = text.lastIndexOf('\r');
    if (cr >= 0 && cr < text.length - 1) text = text.slice(cr + 1);
    text = text.replace(/\x1b\][^\x07\x1b]*(\x07|\x1b\\)/g, '');
    var out = '', last = 0, open = openSpan(state), re = /\x1b\[([0-9;?]*)([A-Za-z])/g, m;
    out += open;
    while ((m = re.exec(text)) !== null) {
      out += markHtml(text.slice(last, m.index), mark);
      last = re.lastIndex;
      if (m[2] !== 'm') continue;
      if (open) out += '</span>';
      applySgr(state, m[1]);
      open = openSpan(state);
      out += open;
    }
    out += markHtml(text.slice(last).replace(/\x1b/g, ''), mark);
    if (open) out += '</span>';
    return out;
  }

  // ----- the step log --------------------------------------------------------------------

  var PAGE = 500;
  // A search keeps at most this many matches (the count then reads "100000+").
  var MAX_MATCHES = 100000;
  // How a log is searched: windows of lines the server reads (at most 250,000 each), the
  // first short, a few at a time.
  var FIRST_WINDOW = 20000;
  var WINDOW = 250000;
  var PARALLEL = 3;

  function escapeRegExp(s) { return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'); }

  // Plain text to HTML with each match of `re` (global) marked.
  function markHtml(text, re) {
    if (!re || !text) return escapeHtml(text);
    var out = '', last = 0, m;
    re.lastIndex = 0;
    while ((m = re.exec(text)) !== null) {
      if (m[0] === '') { re.lastIndex++; continue; }
      out += escapeHtml(text.slice(last, m.index)) + '<mark>' + escapeHtml(m[0]) + '</mark>';
      last = m.index + m[0].length;
    }
    return out + escapeHtml(text.slice(last));
  }

  // Finds in the whole log: the server searches what it stores, window by window (so the
  // first matches come at once), and lines that arrive live are searched here.
  function Finder(view, api, bar) {
    var input = bar.querySelector('.find-q');
    var caseBox = bar.querySelector('.find-case');
    var regexBox = bar.querySelector('.find-regex');
    var count = bar.querySelector('.find-count');
    var timer = null;
    var s = null;   // the search under way: {re, matches, current, done, searchedTo, more}

    function say(text) { count.textContent = text; }

    function tell() {
      if (!s) { say(''); return; }
      if (s.error) { say(s.error); return; }
      var n = s.matches.length;
      var of = n + (s.more || !s.done ? '+' : '');
      if (!n) say(s.done ? 'no match' : 'searching…');
      else say((s.current + 1) + ' of ' + of);
    }

    function clear() {
      s = null;
      tell();
      view.searchChanged(null);
    }

    function start() {
      var q = input.value;
      if (!q) { clear(); return; }
      var re;
      try {
        re = new RegExp(regexBox.checked ? q : escapeRegExp(q), caseBox.checked ? 'g' : 'gi');
      } catch (e) {
        s = { error: 'not a regular expression' };
        tell();
        view.searchChanged(null);
        return;
      }
      s = { re: re, matches: [], current: -1, done: false, searchedTo: 0, more: false,
        q: q, cased: caseBox.checked, regex: regexBox.checked, windows: [], queued: [], running: 0 };
      // The log in windows, searched from the view on (as a browser's find goes on from
      // where the reader is) and then from the top: a short window first, alone, so that
      // matches near the view come at once; then windows of WINDOW lines a few at a time.
      // The one that reaches the end runs on to the end of what is stored (a running step's
      // log grows).
      var total = Math.max(1, view.total());
      var top = Math.min(view.topLine(), total);
      var ranges = [[top, top + FIRST_WINDOW - 1]];
      for (var at = top + FIRST_WINDOW; at <= total; at += WINDOW) ranges.push([at, at + WINDOW - 1]);
      ranges[ranges.length - 1][1] = Infinity;
      for (at = 1; at < top; at += WINDOW) ranges.push([at, Math.min(top - 1, at + WINDOW - 1)]);
      ranges.forEach(function (range, i) {
        s.windows.push({ from: range[0], to: range[1], matches: [], done: false, searchedTo: 0 });
        s.queued.push(i);
      });
      view.searchChanged(s);
      tell();
      more(s);
    }

    // Starts queued windows while fewer than PARALLEL run (one, until the first is done).
    function more(mine) {
      var limit = mine.windows[0].done ? PARALLEL : 1;
      while (mine.running < limit && mine.queued.length) {
        var i = mine.queued.shift();
        mine.running++;
        fetchWindow(mine, i, mine.windows[i].from);
      }
    }

    function fetchWindow(mine, i, from) {
      var w = mine.windows[i];
      var lines = w.to === Infinity ? WINDOW : w.to - from + 1;
      var url = api + '/search?q=' + encodeURIComponent(mine.q) + '&case=' + mine.cased +
        '&regex=' + mine.regex + '&from=' + from + '&lines=' + lines;
      fetch(url, { credentials: 'same-origin' }).then(function (r) {
        return r.json().then(function (body) { return { ok: r.ok, body: body }; });
      }).then(function (answer) {
        if (s !== mine) return;
        // The server's reason (`message`): a pattern this browser takes may be one it refuses.
        if (!answer.ok) { s.error = answer.body.message || 'the search failed'; s.done = true; tell(); return; }
        var body = answer.body;
        Array.prototype.push.apply(w.matches, body.matches);
        w.searchedTo = Math.max(w.searchedTo, body.searched_to);
        // A window cut short by the match bound goes on where it stopped.
        if (body.next && body.next <= w.to && w.matches.length < MAX_MATCHES) {
          fetchWindow(mine, i, body.next);
        } else {
          w.done = true;
          s.running--;
          more(s);
        }
        gather();
      }).catch(function () { if (s === mine) { s.error = 'the search failed'; tell(); } });
    }

    // The windows' matches in order, and the current match kept (or chosen: the first at or
    // after the view's top, as a browser's find does).
    function gather() {
      var keep = s.current >= 0 ? s.matches[s.current] : null;
      var all = [];
      s.windows.slice().sort(function (a, b) { return a.from - b.from; })
        .forEach(function (w) { Array.prototype.push.apply(all, w.matches); });
      s.more = all.length > MAX_MATCHES;
      s.matches = s.more ? all.slice(0, MAX_MATCHES) : all;
      s.done = s.windows.every(function (w) { return w.done; });
      if (keep !== null) {
        s.current = s.matches.indexOf(keep);
      } else if (s.matches.length) {
        s.current = firstFrom(view.topLine());
        view.reveal(s.matches[s.current]);
      }
      if (s.done) {
        s.searchedTo = s.windows.filter(function (w) { return w.to === Infinity; })[0].searchedTo;
        // Lines this page received live after the server's last window looked.
        view.heldAfter(s.searchedTo).forEach(live);
      }
      tell();
      view.searchChanged(s);
    }

    // The first match at or after line `n`, else the first.
    function firstFrom(n) {
      for (var i = 0; i < s.matches.length; i++) if (s.matches[i] >= n) return i;
      return 0;
    }

    // A line that arrived live: searched here once the server's search is done.
    function live(line) {
      if (!s || !s.done || s.error || line.n <= s.searchedTo) return;
      s.searchedTo = line.n;
      s.re.lastIndex = 0;
      if (!s.re.test(line.text)) return;
      if (s.matches.length >= MAX_MATCHES) { s.more = true; return; }
      s.matches.push(line.n);
      if (s.current < 0) { s.current = 0; view.reveal(line.n); }
      tell();
      view.searchChanged(s);
    }

    function step(by) {
      if (!s || !s.matches.length) return;
      s.current = (s.current + by + s.matches.length) % s.matches.length;
      view.reveal(s.matches[s.current]);
      tell();
      view.searchChanged(s);
    }

    function open() {
      bar.hidden = false;
      input.focus();
      input.select();
    }

    function close() {
      bar.hidden = true;
      clear();
      view.focus();
    }

    function later() {
      clearTimeout(timer);
      timer = setTimeout(start, 50);
    }

    input.addEventListener('input', later);
    caseBox.addEventListener('change', start);
    regexBox.addEventListener('change', start);
    input.addEventListener('keydown', function (event) {
      if (event.key === 'Enter') { event.preventDefault(); step(event.shiftKey ? -1 : 1); }
      else if (event.key === 'Escape') { event.preventDefault(); close(); }
    });
    bar.querySelector('.find-next').addEventListener('click', function () { step(1); });
    bar.querySelector('.find-prev').addEventListener('click', function () { step(-1); });
    bar.querySelector('.find-close').addEventListener('click', close);

    return {
      open: open,
      live: live,
      current: function () { return s && s.current >= 0 ? s.matches[s.current] : null; },
      stop: function () { s = null; clearTimeout(timer); }
    };
  }

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
    var source = null;
    var search = null;       // the finder's search, for highlighting
    var gone = false;

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
      // gantry's own lines (pulls, retries) are told apart from the step's output.
      var own = line.text.lastIndexOf('gantry: ', 0) === 0;
      var start = Object.assign({}, state);
      pg.lines[(line.n - 1) % PAGE] = { t: line.t, own: own, text: line.text, start: start,
        html: ansiToHtml(line.text, state) };
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
          if (gone) return;
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
      if (scheduled || gone) return;
      scheduled = true;
      requestAnimationFrame(function () { scheduled = false; render(); });
    }

    function ts(ms) {
      var s = Math.floor(ms / 1000);
      return String(Math.floor(s / 60)).padStart(2, '0') + ':' + String(s % 60).padStart(2, '0') + '.' + String(ms % 1000).padStart(3, '0');
    }

    // A line's HTML, with the search's matches marked when one is under way.
    function lineHtml(line) {
      if (!search || !search.re) return { html: line.html, hit: false };
      search.re.lastIndex = 0;
      if (!search.re.test(line.text)) return { html: line.html, hit: false };
      return { html: ansiToHtml(line.text, Object.assign({}, line.start), search.re), hit: true };
    }

    function render() {
      if (gone) return;
      spacer.style.height = (total * lh) + 'px';
      if (following) el.scrollTop = el.scrollHeight;
      var first = Math.max(1, Math.floor(el.scrollTop / lh) - 20);
      var last = Math.min(total, Math.ceil((el.scrollTop + el.clientHeight) / lh) + 20);
      var current = finder ? finder.current() : null;
      var html = [];
      for (var n = first; n <= last; n++) {
        var pg = pages.get(pageOf(n));
        if (!pg) load(pageOf(n));
        var line = pg && pg.lines[(n - 1) % PAGE];
        var shown = line ? lineHtml(line) : { html: '', hit: false };
        var cls = (selection && n >= selection[0] && n <= selection[1] ? ' hl' : '') +
          (line && line.own ? ' own' : '') + (shown.hit ? ' match' : '') + (n === current ? ' current' : '');
        html.push('<div class="line' + cls + '" id="L' + n + '"><a class="num" data-n="' + n + '" href="#L' + n + '">' + n +
          '</a><span class="ts">' + (line ? ts(line.t) : '') + '</span><span class="text">' +
          shown.html + '</span></div>');
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

    function reveal(n) {
      following = false;
      el.scrollTop = Math.max(0, (n - 1) * lh - el.clientHeight / 3);
      schedule();
    }

    function goTo(range) {
      selection = range;
      reveal(range[0]);
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
      history.replaceState(history.state, '', range[0] === range[1] ? '#L' + range[0] : '#L' + range[0] + '-L' + range[1]);
      schedule();
    });

    el.addEventListener('keydown', function (event) {
      var find = (event.key === 'f' && (event.ctrlKey || event.metaKey)) ||
        (event.key === '/' && !event.ctrlKey && !event.metaKey && !event.altKey);
      if (find && finder) { event.preventDefault(); finder.open(); }
    });

    function onHash() {
      var range = parseHash();
      if (range) goTo(range);
    }
    window.addEventListener('hashchange', onHash);

    var times = document.getElementById('show-times');
    if (times) {
      el.classList.toggle('show-times', times.checked);
      times.addEventListener('change', function () { el.classList.toggle('show-times', times.checked); });
    }

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
      source = new EventSource(api + '/stream?after=' + total);
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
        if (finder) finder.live(line);
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

    var view = {
      total: function () { return total; },
      topLine: function () { return Math.max(1, Math.floor(el.scrollTop / lh) + 1); },
      reveal: reveal,
      focus: function () { el.focus({ preventScroll: true }); },
      searchChanged: function (s) { search = s; schedule(); },
      // Lines held in this page numbered after `n` (received live), in order.
      heldAfter: function (n) {
        var out = [];
        for (var i = n + 1; i <= lastLive; i++) {
          var pg = pages.get(pageOf(i));
          var line = pg && pg.lines[(i - 1) % PAGE];
          if (line) out.push({ n: i, text: line.text });
        }
        return out;
      }
    };
    var bar = document.getElementById('find');
    var finder = bar ? Finder(view, api, bar) : null;
    var opener = document.getElementById('find-open');
    if (opener && finder) opener.addEventListener('click', finder.open);

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
    view.focus();
    var handle = {
      total: function () { return total; },
      // Stops everything this view started (another step's log replaces it).
      close: function () {
        gone = true;
        if (source) source.close();
        if (finder) finder.stop();
        window.removeEventListener('hashchange', onHash);
      }
    };
    el.logView = handle;
    return handle;
  }

  // ----- the build's steps beside a step's log ----------------------------------------

  function stepHref(base, stage, step) { return base + '/' + stage + '/' + step; }

  function StepPanel(nav) {
    var api = nav.dataset.build;
    var base = nav.dataset.base;
    var view = null;

    function links() { return Array.prototype.slice.call(nav.querySelectorAll('a.panel-step')); }

    function mark() {
      var here = location.pathname;
      links().forEach(function (a) {
        var on = a.getAttribute('href') === here;
        a.classList.toggle('current', on);
        if (on) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
      });
    }

    function draw(build) {
      var html = [];
      (build.stages || []).forEach(function (stage) {
        html.push('<div class="panel-stage" data-stage="' + stage.number + '"><div class="panel-stage-name">' +
          statusHtml(stage.status) + ' ' + escapeHtml(stage.name) + '</div><ul>');
        (stage.steps || []).forEach(function (step) {
          html.push('<li><a class="panel-step" data-status="' + step.status + '" href="' +
            stepHref(base, stage.number, step.number) + '">' + statusHtml(step.status) +
            '<span class="panel-name">' + escapeHtml(step.name) + '</span><span class="took">' +
            took(step.started_at, step.finished_at) + '</span></a></li>');
        });
        html.push('</ul></div>');
      });
      nav.innerHTML = html.join('');
      mark();
    }

    function tick() {
      fetch(api, { credentials: 'same-origin' }).then(function (r) { return r.json(); }).then(function (build) {
        draw(build);
        if (!build.finished_at) setTimeout(tick, 1500);
      }).catch(function () { setTimeout(tick, 5000); });
    }

    // Shows another step's log in place: its page is fetched and its log part swapped in.
    function open(href, push) {
      return fetch(href, { credentials: 'same-origin' }).then(function (r) {
        if (!r.ok) throw new Error(String(r.status));
        return r.text();
      }).then(function (text) {
        var doc = new DOMParser().parseFromString(text, 'text/html');
        var fresh = doc.getElementById('step-main');
        var here = document.getElementById('step-main');
        if (!fresh || !here) { location.href = href; return; }
        if (view) view.close();
        if (push) history.pushState({ step: href }, '', href);
        here.replaceWith(document.adoptNode(fresh));
        document.title = doc.title;
        mark();
        var log = document.getElementById('log');
        view = log ? LogView(log) : null;
      }).catch(function () { location.href = href; });
    }

    nav.addEventListener('click', function (event) {
      var a = event.target.closest && event.target.closest('a.panel-step');
      if (!a || event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
      event.preventDefault();
      if (a.getAttribute('href') !== location.pathname) open(a.getAttribute('href'), true);
    });

    window.addEventListener('popstate', function () {
      if (/^\/[^/]+\/[^/]+\/\d+\/\d+\/\d+$/.test(location.pathname)) open(location.pathname, false);
    });

    // j and k: the next and previous step.
    document.addEventListener('keydown', function (event) {
      if (event.ctrlKey || event.metaKey || event.altKey) return;
      if (event.key !== 'j' && event.key !== 'k') return;
      var t = event.target;
      if (t && (t.tagName === 'INPUT' || t.tagName === 'TEXTAREA' || t.tagName === 'SELECT' || t.isContentEditable)) return;
      var all = links();
      var at = all.findIndex(function (a) { return a.getAttribute('href') === location.pathname; });
      var next = all[at + (event.key === 'j' ? 1 : -1)];
      if (next) { event.preventDefault(); open(next.getAttribute('href'), true); }
    });

    history.replaceState({ step: location.pathname }, '', location.href);
    mark();
    var log = document.getElementById('log');
    view = log ? LogView(log) : null;
    if (nav.dataset.finished !== 'true') setTimeout(tick, 1500);
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
          // The picture's box and its steps take their new colours.
          var drawn = section.querySelector('.pic-stage[data-number="' + stage.number + '"]');
          if (drawn) drawn.setAttribute('class', 'pic-stage s-' + stage.status);
          stage.steps.forEach(function (step) {
            var row = box.querySelector('tr[data-step="' + step.number + '"]');
            if (!row) return;
            row.querySelector('.st').innerHTML = statusHtml(step.status);
            row.querySelector('.took').textContent = took(step.started_at, step.finished_at);
            row.querySelector('.exit').textContent = step.exit_code === null || step.exit_code === undefined ? '' : 'exit ' + step.exit_code;
            var link = drawn && drawn.querySelector('a.pic-step[href$="/' + stage.number + '/' + step.number + '"]');
            if (link) link.setAttribute('class', 'pic-step s-' + step.status);
          });
        });
        ticks++;
        // The timeline is drawn by the server: redrawn every few ticks and at the end, so
        // that running steps' bars grow and new steps get theirs.
        if (build.finished_at || ticks % 3 === 0) redrawTimeline();
        if (build.finished_at) {
          var cancel = document.getElementById('cancel');
          if (cancel) cancel.closest('form').remove();
        } else {
          setTimeout(tick, 1500);
        }
      }).catch(function () { setTimeout(tick, 5000); });
    }
    var ticks = 0;
    function redrawTimeline() {
      fetch(location.pathname, { credentials: 'same-origin' }).then(function (r) { return r.text(); }).then(function (text) {
        var fresh = new DOMParser().parseFromString(text, 'text/html').getElementById('timeline');
        var here = document.getElementById('timeline');
        if (fresh && here) here.replaceWith(document.adoptNode(fresh));
      }).catch(function () {});
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
    var panel = document.getElementById('step-panel');
    var log = document.getElementById('log');
    if (panel) StepPanel(panel);
    else if (log) LogView(log);
    var build = document.getElementById('build');
    if (build) liveBuild(build);
    var list = document.getElementById('builds');
    if (list) liveList(list);
  });
})();
