// The console's page: renders the state the server pushes (server-sent events; the
// page never polls), searches correlation ids and redrives dead letters on request.
// Text from events is only ever set as text, never as HTML.
'use strict';

const $ = (id) => document.getElementById(id);

// An element with attributes and children (strings become text nodes).
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'onclick') e.addEventListener('click', v);
    else if (v !== undefined && v !== null) e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c ?? '')));
  return e;
}

// The redrive token: given once in the URL's fragment (never sent to the server in a
// URL), kept for the tab's session.
const token = (() => {
  const m = location.hash.match(/token=([0-9a-zA-Z]+)/);
  if (m) {
    sessionStorage.setItem('eventpipe-token', m[1]);
    history.replaceState(null, '', location.pathname);
  }
  return () => sessionStorage.getItem('eventpipe-token') || $('dl-token').value.trim();
})();

let current = null;
const cards = new Map();

const ms = (v) => (v === null || v === undefined ? '–' : v < 1000 ? `${Math.round(v)} ms` : `${(v / 1000).toFixed(1)} s`);
const rate = (v) => (v >= 10 ? v.toFixed(0) : v.toFixed(1));
const time = (at) => new Date(at).toISOString().slice(11, 23);

function traceCell(traceId) {
  if (!traceId || /^0+$/.test(traceId)) return el('td', {}, '–');
  const short = traceId.slice(0, 12);
  if (current && current.jaeger_url) {
    return el('td', {}, el('a', { href: `${current.jaeger_url.replace(/\/$/, '')}/trace/${traceId}`, target: '_blank', rel: 'noopener', title: traceId }, short));
  }
  return el('td', { title: traceId }, short);
}

function correlationCell(id) {
  if (!id) return el('td', {}, '–');
  return el('td', {}, el('button', { class: 'link', type: 'button', title: 'find every event of this correlation id', onclick: () => search(id) }, id));
}

function figure(name, label) {
  return el('div', { class: `figure ${name}`, 'data-field': name }, el('div', { class: 'v' }, '–'), el('div', { class: 'k' }, label));
}

function card(p) {
  const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
  svg.setAttribute('class', 'chart');
  svg.setAttribute('viewBox', '0 0 600 56');
  svg.setAttribute('preserveAspectRatio', 'none');
  for (const cls of ['in', 'out']) {
    const line = document.createElementNS('http://www.w3.org/2000/svg', 'polyline');
    line.setAttribute('class', cls);
    svg.append(line);
  }
  const dl = el('button', { type: 'button', class: 'dead-letters', onclick: () => openDeadLetters(p.name) }, 'Dead letters');
  const c = el('section', { class: 'card', 'data-pipeline': p.name },
    el('div', { class: 'title' }, el('h2', {}, p.name), el('span', { class: 'badge status' }), el('span', { class: 'muted replicas' }), el('span', { class: 'muted conditions' })),
    el('div', { class: 'figures' },
      figure('accepted', 'accepted'), figure('finished', 'finished'), figure('in-rate', 'in /s'), figure('out-rate', 'out /s'),
      figure('p50', 'latency p50'), figure('p99', 'latency p99'), figure('queue', 'queue depth'), figure('dlq', 'DLQ depth'), figure('lag', 'stream lag')),
    svg,
    el('div', { class: 'legend' }, el('span', { class: 'in' }, '— in'), ' ', el('span', { class: 'out' }, '— out'), ' per second, last 60 s'),
    el('table', { class: 'recent' }, el('thead', {}, el('tr', {}, ...['time', 'event', 'type', 'correlation', 'at', 'outcome', 'latency', 'trace'].map((h) => el('th', {}, h)))), el('tbody', { class: 'recent' })));
  if (p.dead_letters) c.querySelector('.title').append(dl);
  return c;
}

function set(c, field, value) {
  const f = c.querySelector(`[data-field="${field}"]`);
  f.querySelector('.v').textContent = value;
  return f;
}

function points(series, max) {
  const step = 600 / (series.length - 1);
  return series.map((v, i) => `${(i * step).toFixed(1)},${(54 - (v / max) * 50).toFixed(1)}`).join(' ');
}

function renderPipeline(p) {
  let c = cards.get(p.name);
  if (!c) {
    c = card(p);
    cards.set(p.name, c);
    $('pipelines').append(c);
  }
  const s = p.stats;
  c.querySelector('.status').textContent = p.status;
  c.querySelector('.replicas').textContent = `${p.replicas} replica${p.replicas === 1 ? '' : 's'}`;
  c.querySelector('.conditions').textContent = p.conditions.filter((x) => x.status !== 'True').map((x) => `${x.type}: ${x.message}`).join('; ');
  set(c, 'accepted', s.accepted);
  set(c, 'finished', s.finished);
  set(c, 'in-rate', rate(s.in_rate));
  set(c, 'out-rate', rate(s.out_rate));
  set(c, 'p50', ms(s.p50_ms));
  set(c, 'p99', ms(s.p99_ms));
  set(c, 'queue', p.depths ? p.depths.queue : '–');
  set(c, 'dlq', p.depths ? p.depths.dead_letters : '–').classList.toggle('some', !!(p.depths && p.depths.dead_letters > 0));
  set(c, 'lag', p.depths && p.depths.stream_lag_seconds != null ? `${p.depths.stream_lag_seconds} s` : '–');
  const max = Math.max(1, ...s.in_series, ...s.out_series);
  c.querySelector('polyline.in').setAttribute('points', points(s.in_series, max));
  c.querySelector('polyline.out').setAttribute('points', points(s.out_series, max));
  c.querySelector('tbody.recent').replaceChildren(...s.recent.map((r) => el('tr', {},
    el('td', { title: time(r.at_ms) }, time(r.at_ms).slice(0, 8)), el('td', { title: r.id }, r.id), el('td', { title: r.type }, r.type), correlationCell(r.correlation_id),
    el('td', { title: `${r.component}/${r.source}` }, r.component), el('td', { class: `outcome-${r.outcome}` }, r.outcome), el('td', {}, ms(r.latency_ms)), traceCell(r.trace_id))));
}

function render(state) {
  current = state;
  state.pipelines.forEach(renderPipeline);
}

async function search(id) {
  $('correlation').value = id;
  const res = await fetch(`/api/search?correlation_id=${encodeURIComponent(id)}`);
  const steps = res.ok ? await res.json() : [];
  $('path').hidden = false;
  $('path-id').textContent = id;
  $('path-none').hidden = steps.length > 0;
  $('path-steps').replaceChildren(...steps.map((r) => el('li', { 'data-pipeline': r.pipeline },
    el('span', { class: 'muted' }, time(r.at_ms)), ' ',
    el('span', { class: 'where' }, `${r.pipeline} · ${r.component}/${r.source}`), ' ',
    el('span', { class: `outcome-${r.outcome}` }, r.outcome), ` ${r.type} ${r.id} in ${ms(r.latency_ms)}`)));
}

let openPipeline = null;

async function openDeadLetters(pipeline) {
  openPipeline = pipeline;
  $('dead-letters').hidden = false;
  $('dl-pipeline').textContent = pipeline;
  $('dl-show').hidden = true;
  $('dl-token-label').hidden = !(current && current.redrive) || !!sessionStorage.getItem('eventpipe-token');
  const res = await fetch(`/api/pipelines/${encodeURIComponent(pipeline)}/dead-letters`);
  if (!res.ok) {
    $('dl-status').textContent = (await res.json()).error;
    $('dl-rows').replaceChildren();
    return;
  }
  const queues = await res.json();
  const letters = queues.flatMap((q) => q.letters);
  $('dl-status').textContent = `${letters.length} dead letter${letters.length === 1 ? '' : 's'}${current && current.redrive ? '' : ' (read-only console: redrive is off)'}`;
  $('dl-rows').replaceChildren(...letters.map((l) => el('tr', { 'data-event': l.event_id || '' },
    el('td', {}, l.event_id ? el('input', { type: 'checkbox', value: l.event_id, 'aria-label': `select ${l.event_id}` }) : ''),
    el('td', { title: l.message_id }, l.event_id || l.message_id), el('td', {}, l.type || '–'), el('td', { title: l.error || '' }, l.error || '–'),
    el('td', {}, l.receive_count || '–'),
    el('td', {}, el('button', { class: 'link', type: 'button', onclick: () => showDeadLetter(l.message_id) }, 'show')))));
}

async function showDeadLetter(id) {
  const res = await fetch(`/api/pipelines/${encodeURIComponent(openPipeline)}/dead-letters/${encodeURIComponent(id)}`);
  const body = await res.json();
  let data = body.body;
  try { data = JSON.stringify(JSON.parse(body.body), null, 2); } catch (_) { /* shown as it is */ }
  $('dl-show').hidden = false;
  $('dl-show').textContent = res.ok ? `${body.error ? `error: ${body.error}\n\n` : ''}${data}` : body.error;
}

async function redrive(ids) {
  const res = await fetch(`/api/pipelines/${encodeURIComponent(openPipeline)}/redrive`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', 'X-Eventpipe-Console': '1', Authorization: `Bearer ${token()}` },
    body: JSON.stringify({ ids, rate: Number($('dl-rate').value) || 10 }),
  });
  const body = await res.json();
  if (!res.ok) {
    $('dl-status').textContent = `redrive refused (${res.status}): ${body.error}`;
    return;
  }
  await openDeadLetters(openPipeline);
  $('dl-status').textContent = `redrove ${body.redriven}, ${body.left} left. ${$('dl-status').textContent}`;
}

$('dl-redrive-selected').addEventListener('click', () => {
  const ids = [...document.querySelectorAll('#dl-rows input:checked')].map((i) => i.value);
  if (ids.length) redrive(ids);
});
$('dl-redrive-all').addEventListener('click', () => redrive(null));
$('dl-close').addEventListener('click', () => { $('dead-letters').hidden = true; });
$('search').addEventListener('submit', (e) => {
  e.preventDefault();
  const id = $('correlation').value.trim();
  if (id) search(id);
});

const events = new EventSource('/api/stream');
events.addEventListener('state', (e) => render(JSON.parse(e.data)));
events.onopen = () => { $('live').textContent = 'live'; $('live').classList.remove('off'); };
events.onerror = () => { $('live').textContent = 'reconnecting'; $('live').classList.add('off'); };
