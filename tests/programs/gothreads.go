// Go target for cryo's tests: goroutines spread over several OS threads
// (GOMAXPROCS 4, two locked to their own thread), a timer, a ticker and
// the netpoller (a pipe being read) across the capture; the main
// goroutine builds a map, prints READY and stops the process (SIGSTOP,
// the capture point); afterwards everything finishes and PASS prints the
// checksum.
package main

import (
	"fmt"
	"os"
	"runtime"
	"sync"
	"syscall"
	"time"
)

func main() {
	runtime.GOMAXPROCS(4)
	m := make(map[int]int)
	for i := 0; i < 200000; i++ {
		m[i] = i*7 + 1
	}
	jobs := make(chan int)
	results := make(chan int, 64)
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(locked bool) {
			defer wg.Done()
			if locked {
				runtime.LockOSThread()
			}
			for k := range jobs {
				results <- m[k]
			}
		}(w < 2)
	}
	r, w, err := os.Pipe()
	if err != nil {
		panic(err)
	}
	got := make(chan string)
	go func() {
		b := make([]byte, 5)
		n, _ := r.Read(b)
		got <- string(b[:n])
	}()
	ticks := 0
	ticker := time.NewTicker(5 * time.Millisecond)
	stopTick := make(chan bool)
	tickDone := make(chan int)
	go func() {
		for {
			select {
			case <-ticker.C:
				ticks++
			case <-stopTick:
				tickDone <- ticks
				return
			}
		}
	}()
	timer := time.NewTimer(200 * time.Millisecond)
	time.Sleep(50 * time.Millisecond)
	fmt.Printf("READY %d\n", os.Getpid())
	syscall.Kill(os.Getpid(), syscall.SIGSTOP)
	go func() {
		for k := 0; k < 200000; k += 7 {
			jobs <- k
		}
		close(jobs)
	}()
	sum := 0
	go func() { wg.Wait(); close(results) }()
	for v := range results {
		sum += v
	}
	w.Write([]byte("hello"))
	if s := <-got; s != "hello" {
		fmt.Println("FAIL pipe", s)
		os.Exit(1)
	}
	<-timer.C
	time.Sleep(30 * time.Millisecond)
	stopTick <- true
	if n := <-tickDone; n < 2 {
		fmt.Println("FAIL ticker", n)
		os.Exit(1)
	}
	runtime.GC()
	fmt.Printf("PASS %d\n", sum)
}
