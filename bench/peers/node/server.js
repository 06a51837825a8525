// The Node peer: express 5, the stack of many SSE tutorials, written the way they write it
// (one `res.write` per subscriber per event), with the frame encoded once per event.
// Contract: see bench/README.md.
'use strict';

const http = require('node:http');
const express = require('express');

const port = Number(process.env.PORT || 3000);
const app = express();
app.use(express.json({ limit: '1mb' }));

const clients = new Set();
let nextId = 0;

app.get('/api/events', (req, res) => {
  res.writeHead(200, {
    'Content-Type': 'text/event-stream',
    'Cache-Control': 'no-cache',
    Connection: 'keep-alive',
  });
  res.write('event: ready\ndata: {}\n\n');
  clients.add(res);
  req.on('close', () => clients.delete(res));
});

app.post('/api/publish', (req, res) => {
  const { topic, text } = req.body ?? {};
  if (typeof topic !== 'string' || typeof text !== 'string' || !/^[A-Za-z0-9_.-]+$/.test(topic)) {
    res.status(400).json({ error: 'expected {"topic": name, "text": string}' });
    return;
  }
  const id = ++nextId;
  const data = JSON.stringify({ id, topic, text, sent_ms: Date.now() });
  const frame = `id: ${id}\nevent: ${topic}\ndata: ${data}\n\n`;
  for (const client of clients) client.write(frame);
  res.status(201).json({ id });
});

// The listen backlog as large as the kernel allows (net.core.somaxconn is 4096 here), as our
// server does; Node's default is 511.
const server = http.createServer(app);
server.listen({ port, host: '127.0.0.1', backlog: 4096 });
process.on('SIGTERM', () => process.exit(0));
