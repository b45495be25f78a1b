package startstop

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestStartStop(t *testing.T) {
	t.Parallel()
	var s Service
	s.Stop() // never started: returns at once
	require.Nil(t, s.Started())

	ran := make(chan struct{})
	require.NoError(t, s.Start(context.Background(), func(ctx context.Context) {
		close(ran)
		<-ctx.Done()
	}))
	<-s.Started()
	<-ran
	require.ErrorIs(t, s.Start(context.Background(), func(context.Context) {}), ErrStarted)
	s.Stop()
	<-s.Stopped()
	s.Stop() // twice: harmless

	// Restartable once stopped.
	again := make(chan struct{})
	require.NoError(t, s.Start(context.Background(), func(ctx context.Context) { close(again); <-ctx.Done() }))
	<-again
	s.Stop()
}

func TestParentCancellationDoesNotStopTheLoop(t *testing.T) {
	t.Parallel()
	var s Service
	parent, cancel := context.WithCancel(context.Background())
	type key struct{}
	got := make(chan any, 1)
	ask, answer := make(chan struct{}), make(chan error)
	require.NoError(t, s.Start(context.WithValue(parent, key{}, "v"), func(ctx context.Context) {
		got <- ctx.Value(key{})
		<-ask
		answer <- ctx.Err()
		<-ctx.Done()
	}))
	require.Equal(t, "v", <-got, "values pass on")
	cancel() // cancellation reaches derived contexts before cancel returns
	ask <- struct{}{}
	require.NoError(t, <-answer, "only Stop ends the loop, not the parent's cancellation")
	s.Stop()
}
