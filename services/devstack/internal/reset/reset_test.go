package reset_test

import (
	"context"
	"testing"

	"refonte.ai/callbacks/internal/testenv"
	"refonte.ai/callbacks/services/devstack/internal/reset"
)

func TestClaim_deletes_another_stacks_keys_once(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	ctx := context.Background()
	url := testenv.RedisURL()
	for _, k := range []string{"a", "{demo}:profile", "apikey:x"} {
		if err := rdb.Set(ctx, prefix+k, "v", 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	other := prefix[:len(prefix)-1] + "-other:"
	if err := rdb.Set(ctx, other+"keep", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Del(context.Background(), other+"keep") })

	n, reset1, err := reset.Claim(ctx, url, prefix, "stack-1")
	if err != nil || !reset1 || n != 3 {
		t.Fatalf("first claim: deleted %d, reset %v, err %v; want 3, true, nil", n, reset1, err)
	}
	if err := rdb.Set(ctx, prefix+"b", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	n, reset2, err := reset.Claim(ctx, url, prefix, "stack-1")
	if err != nil || reset2 || n != 0 {
		t.Fatalf("same owner: deleted %d, reset %v, err %v; want 0, false, nil", n, reset2, err)
	}
	if rdb.Exists(ctx, prefix+"b").Val() != 1 {
		t.Fatal("the owner's own key was deleted")
	}
	if _, reset3, _ := reset.Claim(ctx, url, prefix, "stack-2"); !reset3 {
		t.Fatal("a new owner did not reset")
	}
	if rdb.Exists(ctx, prefix+"b").Val() != 0 || rdb.Exists(ctx, other+"keep").Val() != 1 {
		t.Fatal("reset deleted the wrong keys")
	}
}

func TestRedis_refuses_an_empty_prefix(t *testing.T) {
	if _, err := reset.Redis(context.Background(), testenv.RedisURL(), ""); err == nil {
		t.Fatal("an empty prefix was accepted")
	}
}
