// A real bittorrent-tracker Server (HTTP + UDP) on loopback, for btchat's interop tests.
//
//   node tracker_server.js --http-port P --udp-port Q [--interval S] [--blocked HEX]
//
// Binds HTTP and UDP (IPv4) to 127.0.0.1 and UDP (IPv6) to ::1, because the library
// always opens both UDP sockets; WebSocket and the stats page are off. Prints one JSON
// line {"listening": true, "http": P, "udp": Q, "version": "..."} on stdout once every
// socket listens, then one JSON line per announce the tracker accepted, so a failing
// test can show what the tracker saw. --blocked makes the tracker's filter refuse that
// infohash, so the tests see a real "failure reason" (HTTP) and error packet (UDP).
// Exits on SIGTERM/SIGINT or when stdin closes (the test process went away).

import { readFileSync } from 'node:fs'
import { parseArgs } from 'node:util'
import Server from 'bittorrent-tracker/server'

const { values } = parseArgs({
  options: {
    'http-port': { type: 'string' },
    'udp-port': { type: 'string' },
    interval: { type: 'string', default: '120' },
    blocked: { type: 'string', default: '' }
  }
})
const httpPort = Number(values['http-port'])
const udpPort = Number(values['udp-port'])
if (!(httpPort > 0 && udpPort > 0)) {
  console.error('usage: node tracker_server.js --http-port P --udp-port Q')
  process.exit(2)
}
const blocked = values.blocked.toLowerCase()
const version = JSON.parse(
  readFileSync(new URL('./node_modules/bittorrent-tracker/package.json', import.meta.url))
).version

const server = new Server({
  http: true,
  udp: true,
  ws: false,
  stats: false,
  interval: Number(values.interval) * 1000, // the library takes milliseconds
  filter (infoHash, params, cb) {
    cb(infoHash === blocked ? new Error('infohash blocked by test') : null)
  }
})

server.on('error', err => {
  console.error(`tracker error: ${err.message}`)
  process.exit(1)
})
server.on('warning', err => console.error(`tracker warning: ${err.message}`))
for (const event of ['start', 'update', 'complete', 'stop']) {
  server.on(event, addr => console.log(JSON.stringify({ event, addr })))
}
server.on('listening', () => {
  console.log(JSON.stringify({
    listening: true,
    http: server.http.address().port,
    udp: server.udp4.address().port,
    version
  }))
})
server.listen(
  { http: httpPort, udp: udpPort },
  { http: '127.0.0.1', udp: '127.0.0.1', udp6: '::1' }
)

const stop = () => server.close(() => process.exit(0))
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
process.stdin.on('end', stop)
process.stdin.resume()
