package main

import "testing"

func TestMQCells(t *testing.T) {
	o := mqOptions{scale: "small", shapes: []string{"1x1", "16x2"}, sizes: []string{"256", "1MiB"}, systems: []string{"jetstream", "fluxon"}, rounds: 1}
	cells, err := o.cells()
	if err != nil {
		t.Fatal(err)
	}
	if len(cells) != 4 {
		t.Fatalf("%d cells, want 4", len(cells))
	}
	c := cells[3]
	if c.Producers != 16 || c.Consumers != 2 || c.Size != mib || c.Window != 8 || c.Messages != 1200 {
		t.Fatalf("16x2 1MiB cell = %+v", c)
	}
	for _, bad := range []mqOptions{
		{scale: "huge", shapes: o.shapes, sizes: o.sizes, systems: o.systems, rounds: 1},
		{scale: "small", shapes: []string{"4"}, sizes: o.sizes, systems: o.systems, rounds: 1},
		{scale: "small", shapes: o.shapes, sizes: []string{"8KiB"}, systems: o.systems, rounds: 1},
		{scale: "small", shapes: o.shapes, sizes: o.sizes, systems: []string{"kafka"}, rounds: 1},
		{scale: "small", shapes: o.shapes, sizes: o.sizes, systems: o.systems, rounds: -1},
	} {
		if _, err := bad.cells(); err == nil {
			t.Errorf("%+v: no error", bad)
		}
	}
}
