// The Go peer: net/http and a broadcast hub with one buffered channel per client, the shape of
// most Go SSE examples, standard library only. Each event is encoded once and the same bytes
// go to every client. Contract: see bench/README.md.
package main

import (
	"encoding/json"
	"fmt"
	"log"
	"net/http"
	"os"
	"regexp"
	"sync"
	"time"
)

// clientBuffer is how many events a client may fall behind before it is dropped (our server's
// default subscriber buffer is the same).
const clientBuffer = 1024

type hub struct {
	mu      sync.Mutex
	nextID  uint64
	clients map[chan []byte]struct{}
}

func (h *hub) subscribe() chan []byte {
	ch := make(chan []byte, clientBuffer)
	h.mu.Lock()
	h.clients[ch] = struct{}{}
	h.mu.Unlock()
	return ch
}

func (h *hub) unsubscribe(ch chan []byte) {
	h.mu.Lock()
	if _, ok := h.clients[ch]; ok {
		delete(h.clients, ch)
		close(ch)
	}
	h.mu.Unlock()
}

type liveEvent struct {
	ID     uint64 `json:"id"`
	Topic  string `json:"topic"`
	Text   string `json:"text"`
	SentMs int64  `json:"sent_ms"`
}

// publish encodes the event once and hands the bytes to every client; a client whose buffer
// is full is dropped rather than allowed to stall everyone.
func (h *hub) publish(topic, text string) uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.nextID++
	id := h.nextID
	data, _ := json.Marshal(liveEvent{ID: id, Topic: topic, Text: text, SentMs: time.Now().UnixMilli()})
	frame := []byte(fmt.Sprintf("id: %d\nevent: %s\ndata: %s\n\n", id, topic, data))
	for ch := range h.clients {
		select {
		case ch <- frame:
		default:
			delete(h.clients, ch)
			close(ch)
		}
	}
	return id
}

var topicRe = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)

func (h *hub) events(w http.ResponseWriter, r *http.Request) {
	flusher, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	ch := h.subscribe()
	defer h.unsubscribe(ch)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	if _, err := w.Write([]byte("event: ready\ndata: {}\n\n")); err != nil {
		return
	}
	flusher.Flush()
	for {
		select {
		case <-r.Context().Done():
			return
		case frame, open := <-ch:
			if !open {
				return
			}
			if _, err := w.Write(frame); err != nil {
				return
			}
			// Flush once per batch: what queued up meanwhile goes out in the same write.
			if len(ch) == 0 {
				flusher.Flush()
			}
		}
	}
}

func (h *hub) publishHandler(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	var req struct {
		Topic string `json:"topic"`
		Text  string `json:"text"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&req); err != nil || !topicRe.MatchString(req.Topic) {
		http.Error(w, `expected {"topic": name, "text": string}`, http.StatusBadRequest)
		return
	}
	id := h.publish(req.Topic, req.Text)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	fmt.Fprintf(w, `{"id":%d}`, id)
}

func main() {
	port := os.Getenv("PORT")
	if port == "" {
		port = "3000"
	}
	h := &hub{clients: make(map[chan []byte]struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("/api/events", h.events)
	mux.HandleFunc("/api/publish", h.publishHandler)
	// net.Listen takes its backlog from net.core.somaxconn (4096 here): the largest allowed.
	log.Fatal(http.ListenAndServe("127.0.0.1:"+port, mux))
}
